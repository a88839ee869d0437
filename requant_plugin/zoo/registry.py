"""Named model constructors plus safe loading of their pretrained ``state_dict`` files.

Weights are read only with ``torch.load(..., map_location="cpu", weights_only=True)``, so a file
that carries arbitrary pickled objects is rejected instead of executed.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from requant_plugin.zoo.mobilenet_cifar import mobilenetv2_x0_5
from requant_plugin.zoo.resnet_cifar import (
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
)

__all__ = [
    "MODELS_DIR_ENV",
    "available_models",
    "build_model",
    "default_weights_path",
    "is_model_name",
    "load_model",
    "load_state_dict_file",
    "packaged_weights_path",
]

MODELS_DIR_ENV = "REQUANT_MODELS_DIR"

_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "mobilenetv2": mobilenetv2_x0_5,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
}
#: weights shipped inside the package (used when the models folder has no file for the name)
_PACKAGED_DIR = Path(__file__).resolve().parent / "weights"
_PACKAGED = ("mobilenetv2",)
_HINT = (
    "pass the file explicitly (load_model(..., weights=PATH) / --weights PATH) or set "
    f"${MODELS_DIR_ENV} to a folder holding cifar10_<name>.pt"
)
_MAX_LISTED = 8


def available_models() -> list[str]:
    """Names accepted by :func:`load_model` and :func:`build_model`."""
    return sorted(_BUILDERS)


#: any CIFAR ResNet depth 6n + 2 by name (resnet8, resnet110, resnet1202, ...)
_RESNET_DEPTH = re.compile(r"resnet(\d+)")


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def _resnet_depth(key: str) -> int | None:
    match = _RESNET_DEPTH.fullmatch(key)
    depth = int(match.group(1)) if match else None
    return depth if depth is not None and depth >= 8 and (depth - 2) % 6 == 0 else None


def is_model_name(name: str) -> bool:
    """Whether :func:`build_model` accepts ``name``: a listed name or ``resnet<6n+2>``."""
    return _key(name) in _BUILDERS or _resnet_depth(_key(name)) is not None


def build_model(name: str) -> nn.Module:
    """A freshly initialised (untrained) model for ``name``: a name of :func:`available_models`, or
    ``resnet<d>`` for any CIFAR ResNet depth ``d = 6n + 2`` (e.g. ``resnet110``)."""
    key = _key(name)
    if key in _BUILDERS:
        return _BUILDERS[key]()
    depth = _resnet_depth(key)
    if depth is None:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(available_models())}, or "
                         "resnet<d> for any CIFAR ResNet depth d = 6n + 2 (e.g. resnet110)")
    return CifarResNet(depth)


def _models_dir(models_dir: str | Path | None) -> Path | None:
    """Folder for default weight files: argument, env var, then ``<shared>/models``."""
    if models_dir is not None:
        return Path(models_dir).expanduser()
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    from requant_plugin.data.datasets import find_shared_dir

    shared = find_shared_dir()
    return None if shared is None else shared / "models"


def default_weights_path(name: str, models_dir: str | Path | None = None) -> Path | None:
    """Where :func:`load_model` looks for ``name``'s weights when none are given explicitly."""
    build_model(name)  # validates the name
    folder = _models_dir(models_dir)
    key = _key(name)
    own = None if folder is None else folder / f"cifar10_{key}.pt"
    if (own is None or not own.is_file()) and key in _PACKAGED:
        return packaged_weights_path(key)
    return own


def packaged_weights_path(name: str) -> Path | None:
    """The weights file shipped with the package for ``name`` (``None`` when none is shipped)."""
    key = name.strip().lower().replace("-", "")
    if key not in _PACKAGED:
        return None
    return _PACKAGED_DIR / f"cifar10_{key}.pt"


def _describe(keys: list[str]) -> str:
    """Comma-separated key list, truncated after a few entries."""
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a plain tensor ``state_dict`` with ``weights_only=True``.

    A ``{"state_dict": ...}`` checkpoint wrapper and a ``module.`` (DataParallel) prefix on every
    key are accepted and removed. Raises :class:`FileNotFoundError` for a missing file and
    :class:`ValueError` for anything that is not a readable mapping from names to tensors.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"weights file not found: {file}; {_HINT}")
    try:
        obj: Any = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"refusing to load {file}: it is corrupt or holds objects other than tensors, which "
            f"weights_only=True loading does not allow ({exc})"
        ) from exc
    except Exception as exc:  # corrupt zip, truncated file, wrong format, ...
        raise ValueError(f"cannot read weights file {file}: corrupt or not a torch file ({exc})") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{file} does not hold a state_dict (got {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{file}: state_dict entries that are not named tensors: {_describe(bad)}")
    state: dict[str, Tensor] = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _check_compatible(model: nn.Module, state: Mapping[str, Tensor], source: Path) -> None:
    """Raise ValueError naming missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_describe(shapes)}")
    if problems:
        raise ValueError(
            f"state_dict in {source} does not match {type(model).__name__}: " + "; ".join(problems)
        )


def load_model(
    name: str, weights: str | Path | None = None, *, models_dir: str | Path | None = None
) -> nn.Module:
    """Build model ``name`` and load its pretrained weights strictly; returns it in eval mode.

    Weights come from ``weights`` when given, else ``<models_dir>/cifar10_<name>.pt`` where the
    folder is ``models_dir``, ``$REQUANT_MODELS_DIR`` or the shared ``models`` folder.
    """
    model = build_model(name)
    if weights is not None:
        path = Path(weights).expanduser()
    else:
        found = default_weights_path(name, models_dir)
        if found is None:
            raise FileNotFoundError(
                f"no weights for {name!r}: no models folder found (no shared folder beside the "
                f"repository); {_HINT}"
            )
        path = found
    state = load_state_dict_file(path)
    _check_compatible(model, state, path)
    model.load_state_dict(state, strict=True)
    return model.eval()
