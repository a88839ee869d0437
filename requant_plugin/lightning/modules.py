"""Float and quantized modules of the callback: plain float copies, the float state to quantize
(rank 0's under DDP), weight fingerprints, the ``QuantizedModule`` device wrapper."""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .batches import first_tensor, to_device
from .flows import QUANTIZE_WARNING
from .trainer import distributed

__all__ = ["QuantizedModule", "float_state", "module_device", "plain_copy", "weights_fingerprint"]

_NONDETERMINISTIC = ".*does not have a deterministic implementation"


def weights_fingerprint(module: nn.Module | Mapping[str, Any]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's ``state_dict()`` (or of a
    state dict given directly).

    Equal fingerprints mean bit-identical float weights (the calibration state is valid for
    them); a checkpoint round trip preserves it exactly.
    """
    state = module.state_dict() if isinstance(module, nn.Module) else module
    h = hashlib.sha256()
    for name, t in state.items():
        if not isinstance(t, Tensor):
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def plain_copy(module: nn.Module, state: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A CPU, eval-mode, contiguous deep copy with pruning masks / parametrizations baked in.

    ``state`` (a state dict of ``module``, e.g. rank 0's under DDP) is loaded into the copy
    first. ``torch.nn.utils.prune`` (used by Lightning's ``ModelPruning``) recomputes
    ``weight`` in a forward pre-hook, which would silently undo BN folding in ``prepare_fx``;
    the copy gets plain parameters instead. The original module is not touched.
    """
    from torch.nn.utils import parametrize, prune

    # pruned modules hold ``weight = weight_orig * mask`` as a non-leaf tensor attribute, which
    # deepcopy refuses: hand it detached copies through the memo instead
    memo: dict[int, Any] = {id(v): v.detach().clone() for sub in module.modules()
                            for v in vars(sub).values() if isinstance(v, Tensor) and not v.is_leaf}
    out = copy.deepcopy(module, memo).to("cpu").eval()
    # contiguous layout: a channels_last (or inference-mode channels_last) user model gives the
    # same quantized result as the plain one, since every variant then runs the same kernels
    out = out._apply(lambda t: t.clone(memory_format=torch.contiguous_format))
    if state is not None:
        out.load_state_dict(state)
    for sub in out.modules():
        for hook in list(sub._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                names = ([h._tensor_name for h in hook._pruning_methods]  # type: ignore[attr-defined]
                         if isinstance(hook, prune.PruningContainer) else [hook._tensor_name])
                for name in dict.fromkeys(names):
                    prune.remove(sub, name)
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):  # type: ignore[union-attr,operator]
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def float_state(module: nn.Module, trainer: Any) -> dict[str, Tensor]:
    """The float weights to quantize: the local ``state_dict`` (CPU copies), or rank 0's under DDP.

    DDP keeps parameters identical but not BatchNorm running statistics (each rank updates
    them on its own shard), so every rank quantizes rank 0's state, which is also what rank 0
    writes to checkpoints. This is a collective call under DDP.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
    if distributed(trainer):
        box: list[Any] = [state if torch.distributed.get_rank() == 0 else None]
        torch.distributed.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU when it has none)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


class QuantizedModule(nn.Module):
    """Runs a quantized module on ``run_device`` (CPU for FX/pt2e kernels) for any caller device.

    Tensor inputs move to ``run_device`` and outputs move back to the device of the first
    tensor input. ``train()``/``eval()`` only flip this wrapper's flag: the inner module stays
    in eval mode (exported pt2e modules refuse ``.train()``), so Lightning's loops can call them.
    The quantization-warning spam of lowered FX models is silenced inside ``forward``, and under
    ``torch.use_deterministic_algorithms(True)`` (``Trainer(deterministic=True)``) the call runs
    in warn-only mode: the quantized CPU kernels allocate their output with
    ``quantized_resize_cpu_``, which torch flags although it computes nothing.
    """

    def __init__(self, module: nn.Module, run_device: torch.device | str | None = "cpu",
                 remember_last: bool = False) -> None:
        super().__init__()
        self.module = module
        self.run_device = torch.device(run_device) if run_device is not None else None
        self.remember_last = remember_last
        self._last: tuple[tuple[Any, ...], Any] | None = None

    def last_output_for(self, args: tuple[Any, ...]) -> Any:
        """The output of the last call if it had exactly these argument objects, else ``None``.

        With ``remember_last=True`` (the test-time stand-in) the callback's float-vs-quantized
        comparison reuses the quantized output of ``test_step`` instead of running it twice.
        """
        if self._last is None or len(self._last[0]) != len(args):
            return None
        return self._last[1] if all(a is b for a, b in zip(self._last[0], args, strict=True)) else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)`` on ``run_device``, outputs on the input's device."""
        out = self._run(args, kwargs)
        if self.remember_last:
            self._last = (args, out) if not kwargs else None
        return out

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        first = first_tensor((args, kwargs))
        if self.run_device is not None:
            args, kwargs = to_device(args, self.run_device), to_device(kwargs, self.run_device)
        strict = (torch.are_deterministic_algorithms_enabled()
                  and not torch.is_deterministic_algorithms_warn_only_enabled())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=QUANTIZE_WARNING, category=UserWarning)
            warnings.filterwarnings("ignore", message=_NONDETERMINISTIC, category=UserWarning)
            if strict:  # quantized kernels allocate with quantized_resize_cpu_, flagged by torch
                torch.use_deterministic_algorithms(True, warn_only=True)
            try:
                out = self.module(*args, **kwargs)
            finally:
                if strict:
                    torch.use_deterministic_algorithms(True)
        if self.run_device is not None and first is not None and first.device != self.run_device:
            out = to_device(out, first.device)
        return out

    def forget_last(self) -> None:
        """Drop the remembered last call (its inputs and output)."""
        self._last = None

    def train(self, mode: bool = True) -> QuantizedModule:
        """Set this wrapper's ``training`` flag only; the quantized module stays in eval mode."""
        self.training = mode
        return self
