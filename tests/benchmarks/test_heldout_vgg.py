"""The held-out VGG benchmark: the shipped weights load into its network and its rows name real methods."""

from __future__ import annotations

import torch

from benchmarks import heldout_vgg
from benchmarks.results_peers.methods import METHODS


def test_rows_name_methods_of_the_peer_table() -> None:
    keys = {m.key for m in METHODS}
    assert {key for key, _, _ in heldout_vgg.ROWS} <= keys


def test_weights_load_strictly_and_the_network_classifies() -> None:
    model = heldout_vgg.VGGSiLU()
    model.load_state_dict(torch.load(heldout_vgg.WEIGHTS, weights_only=True), strict=True)
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())


def test_calibration_draws_from_the_training_part_only() -> None:
    class _DS:
        x_train = torch.arange(50_000, dtype=torch.float32)[:, None]

    batches = heldout_vgg.calibration(_DS(), seed=3, images=128, batch=64)
    drawn = torch.cat(batches)[:, 0]
    assert len(batches) == 2 and drawn.unique().numel() == 128 and float(drawn.max()) < heldout_vgg.TRAIN_IMAGES
