"""Pins the gain of the calibration-data mode ("beyond") over plain REQuant on real models.

Digits SmallCNN (trained here, seeded; runs everywhere): at W2 the recipe must beat the
paper's setting and per-channel weight-MSE REQuant on accuracy and cut the KL divergence to
the FP32 predictions by at least half. Margins checked over seeds 0-5 before pinning
(smallest observed: +0.83 points over the paper, KL ratio <= 0.44). The CIFAR-10 ResNet-20
check runs where the shared data and weights are present.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from requant_plugin import quantize_weights
from requant_plugin.data import cifar10_available, load_cifar10, load_digits
from requant_plugin.zoo import train_small_cnn


def _scores(ref: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        lf, lq = ref(x), model(x)
    kl = F.kl_div(F.log_softmax(lq, 1), F.log_softmax(lf, 1), log_target=True, reduction="batchmean")
    return float((lq.argmax(1) == y).double().mean()) * 100, float(kl)


@pytest.mark.parametrize("seed", [0, 1])
def test_beyond_beats_plain_requant_on_digits_w2(seed: int) -> None:
    ds = load_digits(seed=seed)
    model = train_small_cnn(ds.x_train, ds.y_train, epochs=10, seed=seed)
    cal = ds.calibration_batches(256, 64, seed=seed)
    x, y = ds.x_test, ds.y_test
    fp32, _ = _scores(model, model, x, y)
    paper = _scores(model, quantize_weights(model, 2)[0], x, y)
    per_channel = _scores(model, quantize_weights(model, 2, space="uniform", per_channel=True)[0], x, y)
    beyond = _scores(model, quantize_weights(model, 2, recipe="beyond", calibration_data=cal)[0], x, y)
    assert beyond[0] >= paper[0] + 0.5
    assert beyond[0] >= per_channel[0]
    assert beyond[0] >= fp32 - 1.5
    assert beyond[1] <= 0.5 * min(paper[1], per_channel[1])


@pytest.mark.skipif(not cifar10_available(), reason="shared CIFAR-10 arrays not found")
def test_beyond_w3_resnet20_cifar_subset() -> None:
    from requant_plugin.zoo import load_model

    try:
        model = load_model("resnet20")
    except FileNotFoundError:
        pytest.skip("shared ResNet-20 weights not found")
    ds = load_cifar10(test_limit=500, train_limit=1000, seed=0)
    x, y = ds.x_test, ds.y_test
    fp32, _ = _scores(model, model, x, y)
    paper = _scores(model, quantize_weights(model, 3)[0], x, y)
    cal = ds.calibration_batches(128, 64)
    beyond = _scores(model, quantize_weights(model, 3, recipe="beyond", calibration_data=cal,
                                             calibration_rows=2048)[0], x, y)
    assert beyond[0] >= paper[0] + 10.0  # measured: about +18 points
    assert beyond[0] >= fp32 - 2.5
    assert beyond[1] <= 0.3 * paper[1]
