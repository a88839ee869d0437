"""Architecture tests for the CIFAR ResNets (no shared files needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.fx
from torch import nn

from requant_plugin.zoo import (
    CifarResNet,
    OptionAShortcut,
    count_parameters,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
)


@pytest.mark.parametrize(
    ("factory", "keys", "params"),
    [(resnet20, 116, 269_722), (resnet56, 332, 853_018)],
)
def test_state_dict_layout_matches_readme(factory: object, keys: int, params: int) -> None:
    model = factory()  # type: ignore[operator]
    assert len(model.state_dict()) == keys
    assert count_parameters(model) == params


def test_other_depths_follow_6n_plus_2() -> None:
    for factory, blocks in ((resnet32, 5), (resnet44, 7)):
        model = factory()
        for stage in (model.layer1, model.layer2, model.layer3):
            assert len(stage) == blocks


def test_key_shapes_spot_checks() -> None:
    sd = resnet20().state_dict()
    expected = {
        "conv1.weight": (16, 3, 3, 3),
        "bn1.running_var": (16,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (16, 16, 3, 3),
        "layer2.0.conv1.weight": (32, 16, 3, 3),
        "layer2.2.conv2.weight": (32, 32, 3, 3),
        "layer3.0.conv1.weight": (64, 32, 3, 3),
        "layer3.1.bn2.bias": (64,),
        "linear.weight": (10, 64),
        "linear.bias": (10,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("shortcut" in key for key in sd)
    assert all(k.endswith("num_batches_tracked") == (v.dtype == torch.int64) for k, v in sd.items())


def test_convs_have_no_bias_and_strides() -> None:
    model = resnet20()
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            assert module.bias is None
            assert module.kernel_size == (3, 3) and module.padding == (1, 1)
            want = 2 if name in ("layer2.0.conv1", "layer3.0.conv1") else 1
            assert module.stride == (want, want), name


def test_shortcut_choice_fixed_at_construction() -> None:
    model = resnet20()
    assert isinstance(model.layer2[0].shortcut, OptionAShortcut)
    assert isinstance(model.layer3[0].shortcut, OptionAShortcut)
    for stage in (model.layer1, model.layer2, model.layer3):
        for block in list(stage)[1:]:
            assert isinstance(block.shortcut, nn.Identity)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)


def test_option_a_shortcut_pads_channels_symmetrically() -> None:
    x = torch.randn(2, 16, 6, 6)
    out = OptionAShortcut(32)(x)
    assert out.shape == (2, 32, 3, 3)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_feature_map_sizes_and_logits() -> None:
    model = resnet20().eval()
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert shapes == {"layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8)}


def test_every_relu_is_its_own_module() -> None:
    model = resnet20()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 2 * 9
    assert len({id(m) for m in relus}) == len(relus)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)


def test_fx_trace_matches_eager_and_has_no_functional_relu() -> None:
    model = resnet20().eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(traced(x), model(x))
    functions = {n.target for n in traced.graph.nodes if n.op == "call_function"}
    assert torch.relu not in functions and nn.functional.relu not in functions
    relu_calls = [n for n in traced.graph.nodes if n.op == "call_module" and "relu" in str(n.target)]
    assert len(relu_calls) == 19


def test_torch_export_matches_eager() -> None:
    model = resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None,
    reason="torch.onnx.export (dynamo) needs onnx and onnxscript",
)
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_onnx_export(tmp_path: Path) -> None:
    model = resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "resnet20.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    assert path.is_file()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        (out,) = session.run(None, {name: x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("depth", [0, 8 - 6, 21, 18])
def test_invalid_depth_rejected(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth)


def test_num_classes_changes_head() -> None:
    model = CifarResNet(20, num_classes=100)
    assert model.linear.out_features == 100
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
