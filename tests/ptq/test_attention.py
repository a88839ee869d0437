"""Issue 15 item 9: nn.MultiheadAttention's q/k/v projection weights are quantized (weight
objective) and its out_proj works with calibration data (weight objective, with a note)."""

from __future__ import annotations

import pytest
import torch
from refs.variants import assert_untouched, snapshot
from torch import nn

from requant_plugin import estimate_range, quantize_weights
from requant_plugin.ptq.presets import layer_error_curves


class AttnNet(nn.Module):
    def __init__(self, kdim: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.kv = nn.Linear(8, kdim or 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, kv = self.embed(x), self.kv(x)
        return self.head(self.attn(q, kv, kv, need_weights=False)[0])


def _attn(kdim: int | None = None) -> nn.Module:
    torch.manual_seed(0)
    return AttnNet(kdim).eval()


def _encoder(batch_first: bool) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=batch_first)
    return nn.Sequential(nn.Linear(8, 16), layer, nn.Linear(16, 4)).eval()


X = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(0))


def _matrix_weights(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.dim() >= 2}


def test_packed_in_proj_is_quantized_by_the_weight_objective() -> None:
    net = _attn()
    before = snapshot(net)
    q, rep = quantize_weights(net, 4, space="uniform", per_channel=True)
    assert_untouched(net, before)
    names = [x.name for x in rep.layers]
    assert "attn.in_proj_weight" in names and "attn.out_proj" in names
    w = net.attn.in_proj_weight.detach()
    ref = estimate_range(w, 4, per_channel=True, ch_axis=0)  # Linear-like [3E, E]
    torch.testing.assert_close(q.attn.in_proj_weight.detach(), ref.fake_quantize(w), rtol=0, atol=0)
    assert rep["attn.in_proj_weight"].kind == "MultiheadAttention"
    assert rep["attn.in_proj_weight"].alpha == pytest.approx(float(ref.alpha.mean()))
    # no 2-D weight is silently left in float: each one is a reported layer's weight
    reported = {f"{n}.weight" for n in names} | {n for n in names if n.endswith("_weight")}
    assert _matrix_weights(net) <= reported | set(rep.skipped)


def test_separate_q_k_v_weights_are_quantized_and_overrides_apply() -> None:
    net = _attn(kdim=12)
    q, rep = quantize_weights(net, 3, space="uniform", overrides={"attn.k_proj_weight": {"skip": True}})
    assert {"attn.q_proj_weight", "attn.v_proj_weight"} <= {x.name for x in rep.layers}
    assert rep.skipped == {"attn.k_proj_weight": "skipped by override"}
    assert torch.equal(q.attn.k_proj_weight, net.attn.k_proj_weight)
    for attr in ("q_proj_weight", "v_proj_weight"):
        w = getattr(net.attn, attr).detach()
        torch.testing.assert_close(getattr(q.attn, attr).detach(), estimate_range(w, 3).fake_quantize(w),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("recipe", ["beyond", "data-free", None])
def test_transformer_encoder_layer_with_and_without_data(batch_first: bool, recipe: str | None) -> None:
    net = _encoder(batch_first)
    x = X if batch_first else X.transpose(0, 1)
    if recipe == "data-free":  # no BatchNorm: the BN-based correction is not available
        q, rep = quantize_weights(net, 4, recipe=recipe, bias_correction=None)
    else:
        q, rep = quantize_weights(net, 4, recipe=recipe, calibration_data=x)
    names = {x.name for x in rep.layers}
    assert {"1.self_attn.in_proj_weight", "1.self_attn.out_proj", "1.linear1", "1.linear2"} <= names
    assert not rep.skipped
    for name in ("1.self_attn.in_proj_weight", "1.self_attn.out_proj"):
        assert not torch.equal(q.get_parameter(name if name.endswith("weight") else f"{name}.weight"),
                               net.get_parameter(name if name.endswith("weight") else f"{name}.weight"))
    if recipe == "beyond":
        assert rep["1.linear1"].objective == "output" and rep["1.linear2"].objective == "output"
        assert rep["1.self_attn.out_proj"].objective == "weight"
        assert "MultiheadAttention.out_proj: weight objective" in rep["1.self_attn.out_proj"].note
        assert "weight objective" in rep["1.self_attn.in_proj_weight"].note
    with torch.no_grad():
        ref, out = net(x), q(x)
    assert torch.isfinite(out).all()
    assert float((out - ref).pow(2).mean()) < float(ref.pow(2).mean())  # W4 tracks the float model


def test_layer_error_curves_skip_the_attention_out_proj() -> None:
    curves = layer_error_curves(_encoder(True), X, (2, 8))
    assert "1.self_attn.out_proj" not in curves
    assert {"0", "1.linear1", "1.linear2", "2"} <= set(curves)
    assert all(c[2] > c[8] for c in curves.values())
