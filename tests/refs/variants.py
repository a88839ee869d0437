"""Weight-tensor variants a user's model can arrive with, and a check that nothing was touched.

Every entry point that reads weights must give the same result on each variant as on the plain
contiguous model and leave the variant's tensors as they were (values, memory format,
``requires_grad``, inference-ness):

* ``plain``: the model as built (contiguous, ``requires_grad=True``);
* ``channels_last``: ``model.to(memory_format=torch.channels_last)`` (4-D weights permuted);
* ``inference``: every parameter and buffer re-created inside ``torch.inference_mode()`` (as
  ``m.to(...)``/``m.float()`` in an evaluation loop does): inference tensors that still say
  ``requires_grad=True``, in channels_last;
* ``frozen``: ``requires_grad=False`` on every parameter.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

VARIANTS: tuple[str, ...] = ("plain", "channels_last", "inference", "frozen")


def make_variant(model: nn.Module, kind: str) -> nn.Module:
    """A deep copy of ``model`` whose tensors are of the given kind (see the module docstring)."""
    if kind not in VARIANTS:
        raise ValueError(f"unknown variant {kind!r}; valid: {VARIANTS}")
    out = copy.deepcopy(model)
    if kind == "channels_last":
        out = out.to(memory_format=torch.channels_last)
    elif kind == "inference":
        with torch.inference_mode():
            out = out._apply(lambda t: t.clone())
            out = out.to(memory_format=torch.channels_last)
        assert all(p.is_inference() and p.requires_grad for p in out.parameters())
    elif kind == "frozen":
        out.requires_grad_(False)
    return out


def snapshot(model: nn.Module) -> dict[str, tuple[Any, ...]]:
    """Values, strides, ``requires_grad`` and inference-ness of every parameter and buffer."""
    state: dict[str, tuple[Any, ...]] = {}
    with torch.inference_mode():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            state[name] = (t.detach().clone(), t.stride(), t.requires_grad, t.is_inference(), t.dtype)
    return state


def assert_untouched(model: nn.Module, before: dict[str, tuple[Any, ...]]) -> None:
    """Fail if any parameter or buffer of ``model`` differs from :func:`snapshot`'s record."""
    after = snapshot(model)
    assert after.keys() == before.keys(), "parameters or buffers were added or removed"
    for name, (value, stride, grad, inference, dtype) in before.items():
        v2, s2, g2, i2, d2 = after[name]
        assert d2 == dtype, f"{name}: dtype changed {dtype} -> {d2}"
        assert torch.equal(v2, value), f"{name}: values changed"
        assert s2 == stride, f"{name}: memory format changed (strides {stride} -> {s2})"
        assert g2 == grad, f"{name}: requires_grad changed {grad} -> {g2}"
        assert i2 == inference, f"{name}: inference-ness changed {inference} -> {i2}"
