"""load_digits: scikit-learn's 8x8 digits, a seeded stratified split, standardised on train."""

from __future__ import annotations

import torch

from requant_plugin.data import load_digits


def test_digits_shapes_and_standardisation() -> None:
    data = load_digits()
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8)
    assert abs(float(data.x_train.mean())) < 1e-4
    assert abs(float(data.x_train.std()) - 1.0) < 1e-3
    counts = torch.bincount(data.y_test, minlength=10)
    assert int(counts.min()) >= 35
    same = load_digits()
    assert torch.equal(same.x_test, data.x_test)
    assert not torch.equal(load_digits(seed=1).y_test, data.y_test)
