"""LightningModule / DataModule factories for the callback tests (tests/lightning), for either
Lightning flavour, and the environment their child processes are launched with.

``make(flavour)`` returns ``(pl, LitClassifier, DigitsDataModule)`` where ``pl`` is the imported
``lightning.pytorch`` or ``pytorch_lightning`` package. The classifier wraps
``requant_plugin.zoo.SmallCNN`` as ``self.model`` and its ``forward`` takes a keyword-only
argument (Lightning's removed QAT callback broke kwargs in ``forward``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from requant_plugin.data import load_digits
from requant_plugin.zoo import SmallCNN

TESTS = Path(__file__).resolve().parents[1]
FLAVOURS = {"lightning": "lightning.pytorch", "pytorch_lightning": "pytorch_lightning"}
PLUGIN = {"lightning": "requant_plugin.lightning", "pytorch_lightning": "requant_plugin.pytorch_lightning"}

_DIGITS: Any = None


def digits() -> Any:
    """The digits ArrayDataset (cached)."""
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_digits()
    return _DIGITS


def make(flavour: str) -> tuple[Any, type, type]:
    pl = importlib.import_module(FLAVOURS[flavour])

    class LitClassifier(pl.LightningModule):
        def __init__(self, lr: float = 1e-2, seed: int = 0) -> None:
            super().__init__()
            self.save_hyperparameters()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = SmallCNN(1, 10, 8)

        def forward(self, x: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
            return self.model(x) / temperature

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self(x, temperature=1.0), y)
            self.log("train_loss", loss, batch_size=len(y))
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_acc", (self(x).argmax(1) == y).float().mean(), batch_size=len(y))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x, temperature=2.0)  # kwargs through forward, with the quantized stand-in
            self.log("test_acc", (logits.argmax(1) == y).float().mean(), batch_size=len(y))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    class DigitsDataModule(pl.LightningDataModule):
        def __init__(self, batch_size: int = 64, with_val: bool = True, with_train: bool = True) -> None:
            super().__init__()
            self.batch_size = batch_size
            self.with_val = with_val
            self.with_train = with_train

        def train_dataloader(self) -> Any:
            if not self.with_train:
                raise RuntimeError("this datamodule has no train split")
            return digits().loader("train", self.batch_size, shuffle=True, seed=0)

        def val_dataloader(self) -> Any:
            return digits().loader("test", 256) if self.with_val else []

        def test_dataloader(self) -> Any:
            return digits().loader("test", 128)

    return pl, LitClassifier, DigitsDataModule


def trainer_kwargs(**extra: Any) -> dict[str, Any]:
    """Quiet, fast CPU trainer settings."""
    kw: dict[str, Any] = dict(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    kw.update(extra)
    return kw


def child_env() -> dict[str, str]:
    """This process's environment with ``tests/`` first on ``PYTHONPATH``, so that a child script
    (and the ranks Lightning re-launches from it) imports ``refs.litmods`` as the tests do."""
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
