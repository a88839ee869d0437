"""Shared fixtures for the Lightning callback tests, and the Lightning warnings they filter.

The filters are attached to the items of this folder only (not globally); each names the exact
message so that any other warning still fails the test under ``-W error``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent

# Lightning / torch warnings that real Trainer runs emit on this CPU-only setup.
LIGHTNING_FILTERS = (
    # PossibleUserWarning: in-memory TensorDatasets need no worker processes
    "ignore:.*does not have many workers.*",
    # lightning 2.6 uses a pytree API that torch 2.13 deprecates (lightning/pytorch/utilities/_pytree.py)
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*is deprecated.*",
    # torchao's import (mode='pt2e') touches torch.jit.script_method
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            for spec in LIGHTNING_FILTERS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def trained_state() -> dict[str, torch.Tensor]:
    """A SmallCNN trained on digits (plain torch, seeded): the float weights most tests quantize."""
    from refs import litmods

    from requant_plugin.zoo import train_small_cnn

    data = litmods.digits()
    model = train_small_cnn(data.x_train, data.y_train, epochs=4, seed=0)
    return {k: v.clone() for k, v in model.state_dict().items()}
