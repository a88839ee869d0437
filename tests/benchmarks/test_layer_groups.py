"""benchmarks.layer_groups: the groups partition the layers by role on the zoo's architectures."""

from __future__ import annotations

from torch import nn

from benchmarks.layer_groups import layer_groups
from requant_plugin.ptq import quantizable_layers
from requant_plugin.zoo import build_model


def _layers(model: nn.Module) -> list[str]:
    return [n for n, _ in quantizable_layers(model)]


def test_mobilenetv2_groups_cover_every_layer_by_role() -> None:
    model = build_model("mobilenetv2")
    g = layer_groups(model)
    layers = _layers(model)
    assert g["none"] == [] and g["first"] == [layers[0]] and g["classifier"] == [layers[-1]]
    blocks = set(g["depthwise"]) | set(g["expand"]) | set(g["project"])
    assert not set(g["depthwise"]) & set(g["expand"]) and not set(g["expand"]) & set(g["project"])
    assert set(layers) == blocks | {layers[0], layers[-1], *g["last-conv"]}
    assert all(model.get_submodule(n).groups > 1 for n in g["depthwise"])  # type: ignore[operator]
    assert len(g["project"]) == len(g["depthwise"]) == len(g["expand"]) + 1  # the first block has no expansion


def test_resnet_groups_are_the_block_convolutions() -> None:
    model = build_model("resnet20")
    g = layer_groups(model)
    assert len(g["conv1"]) == len(g["conv2"]) == 9
    assert "depthwise" not in g and "expand" not in g
    assert g["classifier"] == [_layers(model)[-1]]
