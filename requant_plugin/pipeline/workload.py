"""Resolve the ``--data`` and ``--model`` choices into a data set and a float model.

Data: ``cifar10``, ``fashion-mnist``, ``digits`` or a folder of CIFAR-style npz files (see
:func:`requant_plugin.data.load_dataset`); ``None`` picks the best one available offline.
Model: a CIFAR ResNet from the zoo (pretrained weights from ``--weights`` or the shared
``models`` folder) or ``small-cnn``, a tiny CNN that is trained on the spot (seconds on the
8x8 digits) unless ``--weights`` gives its ``state_dict``. Every failure the user can fix is
raised as :class:`~requant_plugin.pipeline.errors.UsageError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import ArrayDataset, default_dataset_name, load_dataset
from ..deps import install_hint
from ..zoo import SmallCNN, available_models, is_model_name, load_model, load_state_dict_file, train_small_cnn
from .errors import UsageError

__all__ = ["SMALL_CNN", "Workload", "load_workload", "model_choices"]

SMALL_CNN = "small-cnn"
#: Training images and epochs of the on-the-spot SmallCNN per data set (digits: all 1,437).
_TRAIN_DEFAULTS: dict[str, tuple[int | None, int]] = {
    "digits": (None, 8),
    "fashion-mnist": (4000, 3),
}
_CALIB_TRAIN_IMAGES = 1024  # CIFAR-10 train images read for calibration


def model_choices() -> list[str]:
    """Names accepted by ``--model``."""
    return [*available_models(), SMALL_CNN]


@dataclass
class Workload:
    """A float model in eval mode, the data set it runs on, and how they were obtained."""

    model: nn.Module
    dataset: ArrayDataset
    model_name: str
    model_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def data_label(self) -> str:
        """E.g. ``"digits (train 1437, test 360 images, 1x8x8)"``."""
        d = self.dataset
        shape = "x".join(map(str, d.input_shape))
        return f"{d.name} (train {len(d.y_train)}, test {len(d.y_test)} images, {shape})"


def _load_data(name: str, test_limit: int | None, train_limit: int | None, seed: int) -> ArrayDataset:
    kwargs: dict[str, object] = {"seed": seed, "test_limit": test_limit, "train_limit": train_limit}
    try:
        return load_dataset(name, **kwargs)
    except FileNotFoundError as exc:
        raise UsageError(f"data set {name!r} not found: {exc}") from exc
    except ImportError as exc:
        module = (exc.name or "sklearn").split(".")[0]
        raise UsageError(
            f"data set {name!r} needs the optional package {module!r} ({exc}); install it with: "
            f"{install_hint(module)}"
        ) from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _resolve_model_name(model: str | None, dataset: ArrayDataset) -> str:
    if model is None:
        return "resnet20" if dataset.input_shape == (3, 32, 32) else SMALL_CNN
    key = model.strip().lower().replace("_", "-")
    if key in (SMALL_CNN, "smallcnn"):
        return SMALL_CNN
    if is_model_name(key):
        return key.replace("-", "")
    raise UsageError(f"unknown model {model!r}; valid values: {', '.join(model_choices())}, or resnet<d> for "
                     "any CIFAR ResNet depth d = 6n + 2 (e.g. resnet110, with --weights)")


def _small_cnn(
    dataset: ArrayDataset, weights: str | None, epochs: int | None, seed: int,
    log: Callable[[str], None],
) -> tuple[nn.Module, str]:
    channels, size = dataset.input_shape[0], dataset.input_shape[1]
    if weights is not None:
        model = SmallCNN(channels, dataset.num_classes, size)
        try:
            state = load_state_dict_file(weights)
            model.load_state_dict(state, strict=True)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from exc
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"--weights {weights}: {exc}".splitlines()[0]) from exc
        return model.eval(), f"SmallCNN with weights from {weights}"
    n_epochs = epochs if epochs is not None else _TRAIN_DEFAULTS.get(dataset.name, (None, 5))[1]
    log(f"      training a SmallCNN on {len(dataset.y_train):,} {dataset.name} images "
        f"for {n_epochs} epochs (no --weights given) ...")
    t0 = time.perf_counter()
    model = train_small_cnn(dataset.x_train, dataset.y_train, epochs=n_epochs, seed=seed,
                            num_classes=dataset.num_classes)
    secs = time.perf_counter() - t0
    return model, f"SmallCNN trained here for {n_epochs} epochs in {secs:.1f} s (seed {seed})"


def _zoo_model(name: str, weights: str | None) -> tuple[nn.Module, str]:
    try:
        model = load_model(name, weights)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    except ValueError as exc:
        raise UsageError(str(exc).splitlines()[0]) from exc
    source = f"weights from {weights}" if weights is not None else "pretrained weights (shared models folder)"
    return model, f"{name} with {source}"


def _check_fits(model: nn.Module, name: str, dataset: ArrayDataset) -> None:
    """Run one test image through the model; raise UsageError if shapes or classes do not fit."""
    shape = "x".join(map(str, dataset.input_shape))
    try:
        with torch.no_grad():
            out = model(dataset.x_test[:1])
    except RuntimeError as exc:
        raise UsageError(
            f"model {name!r} cannot run on {dataset.name} images ({shape}): "
            f"{str(exc).splitlines()[0]}; pick a matching --model/--data pair "
            f"(for example --data cifar10 for the ResNets, or --model {SMALL_CNN})"
        ) from exc
    if out.dim() != 2 or out.shape[1] != dataset.num_classes:
        raise UsageError(
            f"model {name!r} outputs {tuple(out.shape[1:])} logits but {dataset.name} has "
            f"{dataset.num_classes} classes"
        )


def load_workload(
    data: str | None,
    model: str | None,
    weights: str | None,
    *,
    test_limit: int | None = None,
    train_limit: int | None = None,
    train_epochs: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Workload:
    """Load the data set and the float model (trained on the spot for ``small-cnn``).

    ``test_limit`` keeps a seeded, class-stratified subset of the test split.
    ``train_limit`` caps the train split (defaults: 1,024 CIFAR-10 images for calibration,
    4,000 Fashion-MNIST images for training the SmallCNN, all 1,437 digits).
    """
    name = data if data is not None else default_dataset_name()
    key = str(name).strip().lower().replace("_", "-")
    if train_limit is None:
        train_limit = _TRAIN_DEFAULTS.get(key, (_CALIB_TRAIN_IMAGES, 0))[0]
    dataset = _load_data(name, test_limit, train_limit, seed)
    model_name = _resolve_model_name(model, dataset)
    if model_name == SMALL_CNN:
        net, source = _small_cnn(dataset, weights, train_epochs, seed, log)
    else:
        net, source = _zoo_model(model_name, weights)
    _check_fits(net, model_name, dataset)
    notes = []
    if test_limit is not None and test_limit < 10**9:
        notes.append(f"accuracy on a seeded class-stratified subset of {len(dataset.y_test):,} test images")
    return Workload(net.eval(), dataset, model_name, source, notes)
