"""Issue 15 item 1: every weights-only entry point accepts inference-tensor, channels_last and
frozen weights, gives the plain contiguous model's result, and leaves the user's model as it was.

Reference: the same call on the plain model (``refs.variants.make_variant(net, "plain")``);
``assert_untouched`` checks values, strides, ``requires_grad`` and inference-ness.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from refs.nets import make_seq_bn_net
from refs.variants import assert_untouched, make_variant, snapshot
from torch import nn

from requant_plugin import estimate_range, quantize_weights
from requant_plugin.ptq.presets import PRESETS, layer_error_curves


def _net() -> nn.Module:
    net = make_seq_bn_net()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():  # non-trivial BN statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(8, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(8, generator=gen) + 0.5)
                m.bias.copy_(0.4 * torch.rand(8, generator=gen) - 0.2)
    return net.eval()


NET = _net()
DATA = [torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
KW: dict[str, Any] = dict(calibration_data=DATA, input_shape=(3, 8, 8))


def _values(model: nn.Module) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _assert_same_values(got: nn.Module, ref: nn.Module) -> None:
    a, b = _values(got), _values(ref)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: differs from the plain model's result"


def _assert_layout_kept(model: nn.Module, before: dict[str, tuple[Any, ...]], *, inference: bool) -> None:
    after = snapshot(model)
    for k in before.keys() & after.keys():
        _, stride, grad, inf, dtype = before[k]
        _, s2, g2, i2, d2 = after[k]
        assert (s2, g2, d2) == (stride, grad, dtype), f"{k}: memory format/requires_grad/dtype changed"
        if inference:
            assert i2 == inf, f"{k}: inference-ness changed"


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("recipe", sorted(PRESETS))
def test_every_recipe_accepts_the_weight_variant(weight_variant: str, recipe: str, inplace: bool) -> None:
    ref, ref_rep = quantize_weights(make_variant(NET, "plain"), 4, recipe=recipe, **KW)
    user = make_variant(NET, weight_variant)
    before = snapshot(user)
    q, rep = quantize_weights(user, 4, recipe=recipe, inplace=inplace, **KW)
    _assert_same_values(q, ref)
    assert [(x.name, x.alpha, x.mse) for x in rep.layers] == [(x.name, x.alpha, x.mse) for x in ref_rep.layers]
    if inplace:
        assert q is user
        _assert_layout_kept(user, before, inference=True)
    else:
        assert_untouched(user, before)
        _assert_layout_kept(q, before, inference=False)
        assert not any(t.is_inference() for t in q.parameters()), "the copy must be a normal model"


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("recipe", ["paper", "beyond", "data-free"])
def test_fold_bn_accepts_the_weight_variant(weight_variant: str, recipe: str, inplace: bool) -> None:
    ref, _ = quantize_weights(make_variant(NET, "plain"), 4, recipe=recipe, fold_bn=True, **KW)
    user = make_variant(NET, weight_variant)
    before = snapshot(user)
    q, rep = quantize_weights(user, 4, recipe=recipe, fold_bn=True, inplace=inplace, **KW)
    assert rep.folded_bn == [("0", "1"), ("3", "4")]
    _assert_same_values(q, ref)
    if not inplace:
        assert_untouched(user, before)


def test_layer_error_curves_and_estimate_range_accept_the_weight_variant(weight_variant: str) -> None:
    user = make_variant(NET, weight_variant)
    before = snapshot(user)
    assert layer_error_curves(user, DATA, (2, 4)) == layer_error_curves(make_variant(NET, "plain"), DATA, (2, 4))
    w_ref = NET[3].weight.detach()
    for space in ("uniform", "sqrt"):
        got = estimate_range(user[3].weight, 3, per_channel=True, space=space)
        ref = estimate_range(w_ref, 3, per_channel=True, space=space)
        assert torch.equal(got.alpha, ref.alpha) and torch.equal(got.mse, ref.mse)
        with torch.inference_mode():
            assert torch.equal(got.fake_quantize(user[3].weight).contiguous(), ref.fake_quantize(w_ref))
    assert_untouched(user, before)


def test_inplace_on_parameters_created_in_inference_mode() -> None:
    """Parameters built inside inference_mode (in-place writes outside it raise) are written
    under inference mode: values quantized, still inference tensors with their requires_grad."""
    ref, _ = quantize_weights(make_variant(NET, "plain"), 4, recipe="beyond", **KW)
    user = make_variant(NET, "plain")
    with torch.inference_mode():
        for m in user.modules():
            for name, t in list(m.named_parameters(recurse=False)):
                setattr(m, name, nn.Parameter(t.detach().clone()))
    existing = dict(user.named_parameters())
    assert all(t.is_inference() for t in existing.values())
    q, _ = quantize_weights(user, 4, recipe="beyond", inplace=True, **KW)
    _assert_same_values(q, ref)
    for name, t in q.named_parameters():
        if name in existing:
            assert t is existing[name] and t.is_inference() and t.requires_grad, name
