"""The held-out MBConv/SE benchmark: its network has what it is there to test (depthwise convolutions,
squeeze-and-excitation gates, residual adds), the shipped weights load into it, and it trains through the
shared training loop."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks import heldout_mbconv, heldout_vgg


def test_the_network_has_depthwise_convs_gates_and_residuals() -> None:
    model = heldout_mbconv.MBConvSE()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert any(c.groups == c.in_channels > 1 for c in convs)
    assert sum(isinstance(m, heldout_mbconv.SqueezeExcite) for m in model.modules()) == 5
    assert sum(m.residual for m in model.modules() if isinstance(m, heldout_mbconv.MBConv)) == 3
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())


def test_weights_load_strictly() -> None:
    model = heldout_mbconv.MBConvSE()
    model.load_state_dict(torch.load(heldout_mbconv.WEIGHTS, weights_only=True), strict=True)


def test_one_training_step_moves_the_weights() -> None:
    class _DS:
        x_train = torch.randn(256, 3, 32, 32)
        y_train = torch.randint(0, 10, (256,))

    torch.manual_seed(0)  # the initial weights train() draws with its seed 0
    before = heldout_mbconv.MBConvSE().state_dict()
    model = heldout_vgg.train(_DS(), epochs=1, build=heldout_mbconv.MBConvSE)  # type: ignore[arg-type]
    assert not model.training
    after = model.state_dict()
    weights = [k for k in after if k.endswith("weight")]
    assert all(after[k].shape == before[k].shape for k in after)
    assert sum(not torch.equal(after[k], before[k]) for k in weights) == len(weights)  # every layer trained
