"""Issue 15 item 8: calibration data quantize_weights cannot use is refused clearly (NaN/Inf,
integer dtypes); float data of another precision and float16/bfloat16 models work."""

from __future__ import annotations

import pytest
import torch
from refs.nets import make_seq_net
from torch import nn

from requant_plugin import quantize_weights
from requant_plugin.ptq.presets import layer_error_curves

X = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_calibration_data_is_refused(bad: float) -> None:
    x = X.clone()
    x[3, 1, 2, 2] = bad
    with pytest.raises(ValueError, match=r"calibration batch 1 has 1 NaN/Inf values"):
        quantize_weights(make_seq_net(), 4, recipe="beyond", calibration_data=[X, x])
    with pytest.raises(ValueError, match=r"calibration batch 0 has 1 NaN/Inf values"):
        layer_error_curves(make_seq_net(), x, (4,))


def test_non_finite_activations_inside_the_model_name_the_layer() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[0].weight.fill_(3e38)  # finite weights whose outputs overflow float32
    with pytest.raises(ValueError, match=r"layer '1' received NaN/Inf inputs during calibration"):
        quantize_weights(net, 4, recipe="beyond", calibration_data=torch.ones(5, 4))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_calibration_data_is_refused_with_the_fix(dtype: torch.dtype) -> None:
    x = (X.abs() * 50).to(dtype)
    with pytest.raises(TypeError, match=rf"calibration batch 0 has dtype {dtype}.*x\.float\(\) / 255"):
        quantize_weights(make_seq_net(), 4, recipe="beyond", calibration_data=x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_model_weight_objective_matches_the_float32_search(dtype: torch.dtype) -> None:
    low = make_seq_net().to(dtype)
    ref_net = make_seq_net().to(dtype).float()  # the same (representable) values in float32
    q, rep = quantize_weights(low, 4, space="uniform", per_channel=True)
    q_ref, rep_ref = quantize_weights(ref_net, 4, space="uniform", per_channel=True)
    assert [x.alpha for x in rep.layers] == [x.alpha for x in rep_ref.layers]  # searched in float32
    for a, b in zip(q.parameters(), q_ref.parameters(), strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.detach(), b.detach().to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_model_takes_float32_calibration_data(dtype: torch.dtype) -> None:
    """Float data of another precision is cast to the model's dtype (what it would compute)."""
    q1, r1 = quantize_weights(make_seq_net().to(dtype), 4, recipe="beyond", calibration_data=X)
    q2, _ = quantize_weights(make_seq_net().to(dtype), 4, recipe="beyond", calibration_data=X.to(dtype))
    for a, b in zip(q1.parameters(), q2.parameters(), strict=True):
        assert a.dtype == dtype and torch.equal(a, b)
    assert all(x.objective == "output" for x in r1.layers)
    out = q1(X.to(dtype)).float()
    assert torch.isfinite(out).all()
