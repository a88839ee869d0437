"""``benchmarks.harness.data``: the ResNet-50-sized weight set and per-layer weight rewriting."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.harness.data import apply_per_layer, resnet50_shapes, resnet50_weights


def test_resnet50_shapes_match_torchvision_resnet50() -> None:
    shapes = resnet50_shapes()
    assert len(shapes) == 54
    # torchvision's resnet50 has 25,557,032 parameters: 25,502,912 conv/fc weights + fc bias
    # (1,000) + BN affine (53,120)
    assert sum(int(np.prod(s)) for _, s in shapes) == 25_502_912
    assert shapes[0] == ("conv1", (64, 3, 7, 7)) and shapes[-1] == ("fc", (1000, 2048))
    assert dict(shapes)["layer4.0.downsample.0"] == (2048, 1024, 1, 1)
    small = resnet50_weights(seed=0, scale_down=16)
    again = resnet50_weights(seed=0, scale_down=16)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(small, again, strict=True))


def test_apply_per_layer_copies_and_folds() -> None:
    from requant_plugin.zoo import resnet20

    model = resnet20().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = apply_per_layer(model, lambda name, w, ax: torch.zeros_like(w), fold_bn=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert all(
        float(m.weight.detach().abs().sum()) == 0.0 for m in out.modules() if isinstance(m, torch.nn.Conv2d)
    )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in out.modules())
