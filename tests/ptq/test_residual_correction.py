"""``residual_correction``: after the layers, each residual sum's mean error per channel moves into its branch
layer's bias, so the W/A integer graph (each tensor quantized once for all its readers, the skip adding the
quantized block input; written out in :func:`refs.nets.residual_integer_logits`) has the float sums' means."""

from __future__ import annotations

import pytest
import torch
from refs.nets import Residual
from torch import fx, nn

import requant_plugin.ptq.stream as stream_mod
from requant_plugin import quantize_weights
from requant_plugin.ptq import QuantizeConfig
from requant_plugin.ptq.activation_sim import ActQParams
from requant_plugin.ptq.residual_correction import correct_residual_means_, residual_branches
from requant_plugin.ptq.stream import GraphStream


def _data(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, 3, 10, 10, generator=g) for _ in range(n)]


def _sums(m: nn.Module, x: torch.Tensor, qps: dict[str, ActQParams] | None = None) -> list[torch.Tensor]:
    """Each block's residual sum before its ReLU: float (``qps=None``), or as the integer graph computes it."""
    def q(name: str, t: torch.Tensor) -> torch.Tensor:
        return t if qps is None else qps[name].quantize(t)

    h, out = torch.relu(m.stem(q("stem", x))), []
    for i, b in enumerate(m.blocks):
        xq = q(f"blocks.{i}.conv1", h)
        z = b.conv2(q(f"blocks.{i}.conv2", torch.relu(b.conv1(xq)))) + xq
        out.append(z)
        h = torch.relu(z)
    return out


def _mean_gap(m: nn.Module, q: nn.Module, qps: dict[str, ActQParams], cal: list[torch.Tensor]) -> float:
    """The largest per-channel gap between the integer graph's and the float sums' means (relative)."""
    with torch.no_grad():
        fl = [torch.stack([s.double().mean((0, 2, 3)) for s in _sums(m, x)]) for x in cal]
        qu = [torch.stack([s.double().mean((0, 2, 3)) for s in _sums(q, x, qps)]) for x in cal]
    f, g = torch.stack(fl).mean(0), torch.stack(qu).mean(0)
    return float((f - g).abs().max() / f.abs().max())


@pytest.mark.parametrize("seed", [0, 1])
def test_the_integer_graphs_residual_sums_get_the_float_means(seed: int) -> None:
    torch.manual_seed(seed)
    m, cal = Residual(blocks=3).eval(), _data()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    off, r0 = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4)
    on, r1 = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, residual_correction=True)
    assert _mean_gap(m, on, r1.act_qparams, cal) < 1e-6 < 1e-3 < _mean_gap(m, off, r0.act_qparams, cal)
    assert sorted(r1.residual_shifts) == [f"blocks.{i}.conv2" for i in range(3)] and not r0.residual_shifts
    assert r1.settings["residual_correction"] is True
    s0, s1 = off.state_dict(), on.state_dict()
    changed = sorted(k for k in s0 if not torch.equal(s0[k], s1[k]))
    assert changed == [f"blocks.{i}.conv2.bias" for i in range(3)]  # only the branch layers' biases move
    for i in range(3):
        delta = (s1[f"blocks.{i}.conv2.bias"] - s0[f"blocks.{i}.conv2.bias"]).abs().mean()
        assert float(delta) == pytest.approx(r1.residual_shifts[f"blocks.{i}.conv2"], rel=1e-5)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # the user's model untouched


def test_the_correction_lowers_the_integer_graphs_output_error() -> None:
    torch.manual_seed(0)
    m, cal = Residual(blocks=3).eval(), _data(6)
    test = _data(8)[6:]
    off, r0 = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=3)
    on, r1 = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=3, residual_correction=True)

    def err(q: nn.Module, qps: dict[str, ActQParams]) -> float:
        with torch.no_grad():
            return sum(float((_sums(q, x, qps)[-1] - _sums(m, x)[-1]).double().mean((0, 2, 3)).abs().sum())
                       for x in test)

    assert err(on, r1.act_qparams) < err(off, r0.act_qparams)  # held-out images: the last sum's mean error


def test_it_needs_act_bits_and_a_flag() -> None:
    with pytest.raises(ValueError, match="residual_correction=True corrects the residual sums of a W/A deployment: "
                                         "set act_bits="):
        QuantizeConfig(recipe="beyond", inputs="quantized", residual_correction=True)
    with pytest.raises(ValueError, match="residual_correction must be True or False, got 1"):
        QuantizeConfig(inputs="quantized", act_bits=4, residual_correction=1)  # type: ignore[arg-type]
    assert QuantizeConfig().residual_correction is False


def test_a_model_that_does_not_stream_is_left_uncorrected_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    m, cal = Residual().eval(), _data()
    off, _ = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4)
    monkeypatch.setattr(stream_mod, "available_memory", lambda _device: 0)  # the stream never fits
    with pytest.warns(UserWarning, match=r"residual_correction=True: the layers do not stream over the model's traced "
                                         r"graph .*so no residual sum was corrected"):
        on, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, residual_correction=True)
    assert not rep.residual_shifts
    assert all(torch.equal(v, on.state_dict()[k]) for k, v in off.state_dict().items())


class _Branches(nn.Module):
    """Adds whose operand ends in a layer through an Identity, in a layer read twice, or in no layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.bn = nn.Identity()  # a folded BatchNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.a(x)) + x  # a, through the Identity
        u = self.b(y)
        z = u + u.relu()  # b's output is read twice: its bias would move both operands
        return self.c(z) + torch.relu(z)  # c (the first operand)


def test_the_branch_layer_is_found_through_pass_through_modules_only() -> None:
    m = _Branches()
    gm = fx.symbolic_trace(m)
    found = {str(n.args[0]): name for n, name in residual_branches(gm.graph, m, ["a", "b", "c"]).items()}
    assert found == {"bn": "a", "c": "c"}
    assert residual_branches(gm.graph, m, ["b"]) == {}  # a layer not asked for is never chosen


class _NormBlock(nn.Module):
    """``relu(bn(conv(x)) + x)`` twice: with ``fold_bn=False`` the BatchNorm ends each branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(2))
        self.bns = nn.ModuleList(nn.BatchNorm2d(8) for _ in range(2))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for conv, bn in zip(self.convs, self.bns, strict=True):
            h = torch.relu(bn(conv(h)) + h)
        return self.fc(h.mean((2, 3)))  # type: ignore[no-any-return]


def test_an_unfolded_batchnorm_ending_the_branch_takes_the_shift() -> None:
    torch.manual_seed(0)
    m, cal = _NormBlock().eval(), _data()
    with torch.no_grad():
        for bn in m.bns:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    off, _ = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, fold_bn=False)
    on, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, fold_bn=False,
                               residual_correction=True)
    assert sorted(rep.residual_shifts) == ["bns.0", "bns.1"]
    s0, s1 = off.state_dict(), on.state_dict()
    assert sorted(k for k in s0 if not torch.equal(s0[k], s1[k])) == ["bns.0.bias", "bns.1.bias"]
    _, rep_f = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, fold_bn=True,
                               residual_correction=True)
    assert sorted(rep_f.residual_shifts) == ["convs.0", "convs.1"]  # folded: the conv (through the Identity)


def test_channels_last_models_and_data_get_the_same_correction() -> None:
    torch.manual_seed(0)
    m, cal = Residual(blocks=3).eval(), _data()
    _, ref = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, residual_correction=True)
    mc = Residual(blocks=3).eval()
    mc.load_state_dict(m.state_dict())
    mc = mc.to(memory_format=torch.channels_last)
    cal_c = [x.contiguous(memory_format=torch.channels_last) for x in cal]
    q, rep = quantize_weights(mc, 4, recipe="beyond", calibration_data=cal_c, act_bits=4, residual_correction=True)
    assert _mean_gap(m, q, rep.act_qparams, cal) < 1e-6
    assert rep.residual_shifts == pytest.approx(ref.residual_shifts, rel=1e-4)


def test_a_sum_that_is_not_finite_names_the_layer_and_the_fix() -> None:
    torch.manual_seed(0)
    m, cal = Residual().eval(), _data()
    q, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4)
    broken = Residual().eval()
    broken.load_state_dict(m.state_dict())
    with torch.no_grad():
        broken.blocks[1].conv2.bias[0] = float("inf")  # the float model's second sum overflows
    stream = GraphStream.build(broken, q, list(rep.act_qparams), cal)
    assert stream is not None
    with pytest.raises(ValueError, match=r"residual_correction: the sum after layer 'blocks.1.conv2' is not finite on "
                                         r"the calibration data; check the model and the data for NaN/Inf"):
        correct_residual_means_(stream, rep.act_qparams)
