"""``inputs="quantized"`` in one pass over the traced graph (:class:`GraphStream`): the same weights as
re-running both models up to every layer, each module called once per batch and model, and the
per-layer passes wherever the stream would not be exact or would not fit."""

from __future__ import annotations

import contextlib

import pytest
import torch
from refs.nets import Residual, residual_integer_logits
from torch import nn

import requant_plugin.ptq.stream as stream_mod
from requant_plugin import quantize_weights
from requant_plugin.ptq.stream import GraphStream


class Block(nn.Module):
    """conv/ReLU/conv plus a skip, then a concatenation with a 1x1 branch and a call_method."""

    def __init__(self, c: int, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.branch = nn.Conv2d(c, c, 1)
        self.merge = nn.Conv2d(2 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv1(x)))
        y = y + x if self.skip else y
        z = torch.cat([y, self.branch(x).clamp(min=0)], dim=1)
        return self.merge(z).relu()


class Net(nn.Module):
    def __init__(self, blocks: int = 3, skip: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(8, skip) for _ in range(blocks)])
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class Branchy(Net):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        if float(y.mean()) > 1e9:
            y = -y
        return self.fc(self.blocks(y).mean((2, 3)))


class Shared(Net):
    """The stem is called twice: its input is not one value per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x) + self.stem(self.pre(x))).mean((2, 3)))


def _data(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, 3, 10, 10, generator=g) for _ in range(n)]


def _net(cls: type[Net] = Net, **kwargs: bool) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kwargs).eval()


# with act_bits, the skip reads the quantized block input in the stream only (act_shortcuts; the last test)
@pytest.mark.parametrize(("act_bits", "skip", "shortcuts"), [(None, True, True), (4, False, True), (4, True, False)])
def test_stream_gives_the_per_layer_passes_weights(monkeypatch: pytest.MonkeyPatch, act_bits: int | None,
                                                   skip: bool, shortcuts: bool) -> None:
    m, cal = _net(skip=skip), _data()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    options = {"act_bits": act_bits, "act_shortcuts": shortcuts}
    q1, r1 = quantize_weights(m, 3, recipe="beyond", calibration_data=cal, **options)
    monkeypatch.setattr(stream_mod, "available_memory", lambda _device: 0)  # the stream never fits
    with pytest.warns(UserWarning, match="act_shortcuts") if act_bits and shortcuts else contextlib.nullcontext():
        q0, r0 = quantize_weights(m, 3, recipe="beyond", calibration_data=cal, **options)
    s0, s1 = q0.state_dict(), q1.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert [x.name for x in r0.layers] == [x.name for x in r1.layers]  # registration order either way
    assert [x.output_mse for x in r0.layers] == [x.output_mse for x in r1.layers]
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # user's model untouched


def _calls(model: nn.Module, cal: list[torch.Tensor]) -> int:
    """How often the stem runs (its pre-hook is deep-copied with the model) in one beyond run."""
    calls = [0]
    model.stem.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    quantize_weights(model, 4, recipe="beyond", calibration_data=cal)
    return calls[0]


def test_each_module_runs_once_per_batch_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    cal = _data(4)
    n, layers = len(cal), 2 + 4 * 3
    streamed = _calls(_net(), cal)
    # a few single-batch passes (reachability, the stream's probe), then per model one input capture
    # and one run per batch: independent of the number of layers, and no separate float pass (the
    # float means for the bias correction come from the stream's float inputs)
    assert streamed <= 3 + 4 * n, streamed
    monkeypatch.setattr(stream_mod, "available_memory", lambda _device: 0)
    per_layer = _calls(_net(), cal)
    assert per_layer >= 2 * n * layers  # both models up to every layer, every batch


def _layers(m: nn.Module) -> list[str]:
    return [n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("cls", [Branchy, Shared])
def test_no_stream_where_it_would_not_be_exact(cls: type[Net]) -> None:
    m, cal = _net(cls), _data()
    assert GraphStream.build(m, m, _layers(m), cal) is None
    q, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal)  # the per-layer passes
    assert {x.name for x in rep.layers} == set(_layers(m))
    with torch.no_grad():
        assert torch.isfinite(q(cal[0])).all()


def test_stream_builds_and_visits_every_layer_in_execution_order() -> None:
    m, cal = _net(), _data(2)
    s = GraphStream.build(m, m, _layers(m), cal)
    assert s is not None
    seen: list[tuple[str, int, tuple[int, ...]]] = []
    s.run(lambda name, xf, xq: seen.append((name, len(xf), tuple(xq[0].shape))))
    names = [x[0] for x in seen]
    assert names[0] == "stem" and names[-1] == "fc" and sorted(names) == sorted(_layers(m))
    assert names.index("blocks.0.merge") > names.index("blocks.0.branch") > names.index("blocks.0.conv2")
    assert all(k == 2 for _, k, _ in seen)
    assert dict((n, s) for n, _, s in seen)["blocks.1.merge"] == (6, 16, 10, 10)


def test_stream_refuses_what_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    m, cal = _net(), _data()
    monkeypatch.setattr(stream_mod, "available_memory", lambda _device: 10**12)
    assert GraphStream.build(m, m, _layers(m), cal) is not None
    monkeypatch.setattr(stream_mod, "available_memory", lambda _device: 10**4)
    assert GraphStream.build(m, m, _layers(m), cal) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_the_skip_reads_the_quantized_tensor_as_the_integer_graph_does(monkeypatch: pytest.MonkeyPatch,
                                                                       seed: int) -> None:
    # the sequential bias correction makes the last layer's mean output equal the float network's on the
    # calibration data, in the arithmetic the calibration simulated: the written-out integer-graph arithmetic
    # (skips adding the quantized tensor) only where the stream simulated it
    torch.manual_seed(seed)
    m, cal = Residual().eval(), _data(4)
    with torch.no_grad():
        ref = torch.cat([m(x) for x in cal]).double().mean(0)

    def gap() -> float:
        q, rep = quantize_weights(m, 4, recipe="beyond", calibration_data=cal, act_bits=4, act_shortcuts=True)
        with torch.no_grad():
            out = torch.cat([residual_integer_logits(q, rep.act_qparams, x) for x in cal]).double().mean(0)
        return float((out - ref).abs().max() / ref.abs().max())

    streamed = gap()
    monkeypatch.setattr(stream_mod, "available_memory", lambda _device: 0)  # the per-layer passes
    with pytest.warns(UserWarning, match="act_shortcuts=True: the layers do not stream over the model's traced graph"):
        per_layer = gap()
    assert streamed < 1e-6 and per_layer > 1e-4, (streamed, per_layer)


def test_a_value_is_shared_only_where_its_layers_agree_on_the_quantizer() -> None:
    m, cal = _net(), _data(1)
    s = GraphStream.build(m, m, _layers(m), cal)
    assert s is not None

    def q4(x: torch.Tensor) -> torch.Tensor:
        return x

    def q8(x: torch.Tensor) -> torch.Tensor:
        return x

    # blocks.0.conv1 and blocks.0.branch read the block input (so does the skip); blocks.0.merge reads the concat
    assert s.share_input_quantization({"blocks.0.conv1": q4, "blocks.0.branch": q8, "blocks.0.merge": q4}) == {
        "blocks.0.merge"}
    assert s.share_input_quantization({"blocks.0.conv1": q4, "blocks.0.branch": q4}) == {
        "blocks.0.conv1", "blocks.0.branch"}
    assert len(s.node_quant) == 2


def test_act_shortcuts_shares_a_value_whose_layers_have_equal_input_ranges() -> None:
    # each block input is read by conv1 and branch (each with its own, equal, range) and by the skip: with
    # act_shortcuts the skip must read it quantized too, so the weights after it change
    m, cal = _net(), _data()
    off, _ = quantize_weights(m, 3, recipe="beyond", calibration_data=cal, act_bits=4)
    on, rep = quantize_weights(m, 3, recipe="beyond", calibration_data=cal, act_bits=4, act_shortcuts=True)
    assert rep.act_qparams["blocks.0.conv1"] == rep.act_qparams["blocks.0.branch"]
    assert rep.act_qparams["blocks.0.conv1"] is not rep.act_qparams["blocks.0.branch"]
    assert torch.equal(on.blocks[0].conv1.weight, off.blocks[0].conv1.weight)  # before any skip: the same
    assert not torch.equal(on.blocks[0].merge.weight, off.blocks[0].merge.weight)  # after the skip: changed
