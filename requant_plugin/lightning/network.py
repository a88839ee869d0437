"""Which network of a LightningModule the callback quantizes, and the test-time swap.

:func:`find_network` picks the child holding the Conv/Linear layers (or the LightningModule's own
``forward``); :func:`resolve_target` turns ``attr`` into that float module; :class:`QuantizedStandIn`
puts the quantized stand-in in its place for ``trainer.test`` and puts the float one back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .modules import QuantizedModule

__all__ = ["Target", "QuantizedStandIn", "find_network", "resolve_target"]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d, nn.Linear)


def find_network(pl_module: nn.Module) -> str:
    """The child of ``pl_module`` holding its Conv/Linear layers, or ``""`` (the LightningModule's own
    forward) when such layers are its direct children; raises listing the candidates if ambiguous."""
    holders = [n for n, c in pl_module.named_children()
               if any(isinstance(m, _WEIGHTED) for m in c.modules())]
    nets = [n for n in holders if not isinstance(pl_module.get_submodule(n), _WEIGHTED)]
    if len(nets) == 1 and len(holders) == 1:
        return nets[0]
    if holders and len(nets) <= 1:
        return ""
    name = type(pl_module).__name__
    if not holders:
        raise ValueError(
            f"REQuantCalibration: {name} has no Conv/Linear layers to quantize (child modules: "
            f"{[n for n, _ in pl_module.named_children()]}); pass attr=<the network's attribute name>"
        )
    raise ValueError(
        f"REQuantCalibration: cannot tell which network of {name} to quantize: {nets} all hold "
        f"Conv/Linear layers; pass attr=<one of them>, e.g. REQuantCalibration(attr={nets[0]!r})"
    )


@dataclass(frozen=True)
class Target:
    """The float module to quantize: ``attr`` (``""`` = the LightningModule's forward), a
    display ``name`` such as ``LitClassifier.model``, and the module itself."""

    attr: str
    name: str
    module: nn.Module


def resolve_target(pl_module: nn.Module, attr: str | None) -> Target:
    """``pl_module.get_submodule(attr)``, or the :func:`find_network` choice when ``attr`` is None."""
    cls = type(pl_module).__name__
    if attr is None:
        found = find_network(pl_module)
        name = ".".join([cls, found or "forward (the LightningModule itself)"])
        return Target(found, name, pl_module.get_submodule(found))
    try:
        module = pl_module.get_submodule(attr)
    except AttributeError:
        children = [n for n, _ in pl_module.named_children()]
        raise ValueError(
            f"REQuantCalibration(attr={attr!r}): {cls} has no submodule {attr!r}; its child modules "
            f"are {children}: pass attr=<one of them>"
        ) from None
    if isinstance(module, QuantizedModule):
        raise RuntimeError(f"{attr!r} is currently a quantized stand-in; this is a bug")
    return Target(attr, f"{cls}.{attr}", module)


class QuantizedStandIn:
    """The quantized ``runner`` standing in for ``pl_module.<attr>`` (or, for ``attr=""``, for
    ``pl_module.forward`` as an instance attribute) until :meth:`restore`."""

    def __init__(self, pl_module: nn.Module, attr: str, runner: nn.Module) -> None:
        parent_name, _, child = attr.rpartition(".")
        self.parent = pl_module.get_submodule(parent_name) if parent_name else pl_module
        self.child = child
        self.float_module = pl_module.get_submodule(attr)
        if child:
            setattr(self.parent, child, runner)
        else:  # the LightningModule's own forward: an instance attribute, removed in restore
            object.__setattr__(pl_module, "forward", runner)

    @property
    def runner(self) -> Any:
        """The stand-in currently in place."""
        return getattr(self.parent, self.child) if self.child else vars(self.parent)["forward"]

    def float_forward(self, *args: Any) -> Any:
        """The float network's output (the class's ``forward`` when the stand-in replaced it)."""
        if self.child:
            return self.float_module(*args)
        return type(self.float_module).forward(self.float_module, *args)

    def restore(self) -> None:
        """Put the float module (or the class's ``forward``) back; forget the last output."""
        parent, child = self.parent, self.child
        runner = getattr(parent, child) if child else vars(parent).pop("forward", None)
        if isinstance(runner, QuantizedModule):
            runner.forget_last()
        if self.child:
            setattr(self.parent, self.child, self.float_module)
