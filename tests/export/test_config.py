"""ExportConfig: frozen and validated once; keyword options over a config always win and give the
same ONNX bytes as the former keyword call; TensorRT-fixed settings accept their one value only.

References: the former ``export_onnx_qdq`` keyword signature (its defaults and its errors) and
the bytes it wrote.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")

from requant_plugin.export import DEFAULT_EXPORT, ExportConfig, export_config, export_onnx_qdq
from requant_plugin.export.config import EXPORT_OVERRIDE_KEYS, TENSORRT_FIXED
from requant_plugin.options import PerChannel, PerTensor, Search, Space


def _net() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
        ).eval()


def _calib() -> list[torch.Tensor]:
    return [torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))]


def test_defaults_are_the_former_keyword_defaults() -> None:
    cfg = ExportConfig()
    assert cfg == DEFAULT_EXPORT
    assert (cfg.weight_bits, cfg.act_bits, cfg.space, cfg.per_channel, cfg.opset, cfg.fp16) == (
        8, 8, "uniform", True, 17, False)
    assert (cfg.p, cfg.search, cfg.transform_first_last, cfg.bins, cfg.strict, cfg.progress) == (
        0.5, "golden", False, 2048, True, False)
    assert cfg.granularity == PerChannel() and cfg.exclude == () and dict(cfg.overrides) == {}
    assert cfg.weight_ranges is None


def test_config_is_frozen_and_parses_strings() -> None:
    cfg = ExportConfig(space="sqrt", search="grid")  # type: ignore[arg-type]
    assert cfg.space is Space.SQRT and cfg.search is Search.GRID
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.weight_bits = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.overrides["x"] = {}  # type: ignore[index]
    assert dataclasses.replace(cfg, weight_bits=4).weight_bits == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_bits": 9}, "bits"),
        ({"weight_bits": 1}, "bits"),
        ({"act_bits": 4}, "act_bits"),
        ({"space": "log"}, "space"),
        ({"search": "random"}, "search"),
        ({"opset": 12}, "opset"),
        ({"opset": 21}, "opset"),
        ({"opset": True}, "opset"),
        ({"fp16": True, "opset": 17}, "opset >= 19"),
        ({"bins": 8}, "bins"),
        ({"granularity": PerChannel(1)}, "output-channel axis"),
        ({"granularity": "tensor"}, "granularity"),
        ({"overrides": {"a": {"bits": 9}}}, "bits"),
        ({"overrides": {"a": {"space": "log"}}}, "space"),
        ({"overrides": {"a": {"typo": 1}}}, "unknown keys"),
        ({"overrides": {"a": {"symmetric": False}}}, "symmetric"),
        ({"overrides": {"a": {"p": 0.3}}}, "transform exponent"),
        ({"overrides": {"a": {"per_channel": False}}}, "granularity"),
        ({"overrides": {"a": {"granularity": PerTensor()}}}, "granularity"),
    ],
)
def test_bad_fields_name_the_field(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExportConfig(**kwargs)


def test_overrides_use_the_shared_layer_override() -> None:
    """The export's keys are the shared ``LayerOverride`` keys minus those TensorRT/the export
    cannot apply per layer; a ``LayerOverride`` is accepted as well as its mapping form."""
    from requant_plugin.ptq.config import OVERRIDE_KEYS, LayerOverride

    assert EXPORT_OVERRIDE_KEYS < OVERRIDE_KEYS
    for key in sorted(OVERRIDE_KEYS - EXPORT_OVERRIDE_KEYS):
        with pytest.raises(ValueError, match="cannot apply per layer"):
            ExportConfig(overrides={"a": {key: 1}})
    cfg = ExportConfig(overrides={"a": LayerOverride(bits=4), "b": {"skip": True}})
    assert dict(cfg.overrides) == {"a": {"bits": 4}, "b": {"skip": True}}
    assert cfg.layer_override("a") == LayerOverride(bits=4) and cfg.skipped == {"b"}
    with pytest.raises(ValueError, match="symmetric"):
        ExportConfig(overrides={"a": LayerOverride(symmetric=True)})
    with pytest.raises(TypeError, match="mapping"):
        ExportConfig(overrides={"a": 4})  # type: ignore[dict-item]


def test_exclude_string_is_refused() -> None:
    with pytest.raises(TypeError, match=r"exclude=\['conv'\]"):
        ExportConfig(exclude="conv")  # type: ignore[arg-type]
    assert ExportConfig(exclude=["a", "b"]).exclude == ("a", "b")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "bad", "match"),
    [("symmetric", False, "symmetric"), ("act_symmetric", False, "symmetric"),
     ("dtype", "uint8", "dtype='uint8'.*int8"), ("act_per_channel", True, "per-channel activations")],
)
def test_tensorrt_fixed_settings(key: str, bad: Any, match: str) -> None:
    only, _ = TENSORRT_FIXED[key]
    assert export_config(**{key: only}) == DEFAULT_EXPORT
    with pytest.raises(ValueError, match=match):
        export_config(**{key: bad})


def test_options_win_over_the_config_and_translate_per_channel() -> None:
    base = ExportConfig(weight_bits=4, space=Space.SQRT, opset=19)
    cfg = export_config(base, weight_bits=6, per_channel=False)
    assert (cfg.weight_bits, cfg.space, cfg.opset, cfg.granularity) == (6, Space.SQRT, 19, PerTensor())
    assert export_config(base) is base
    assert export_config(per_channel=True).granularity == PerChannel()
    with pytest.raises(ValueError, match="not both"):
        export_config(per_channel=True, granularity=PerChannel())
    with pytest.raises(TypeError, match="unknown options"):
        export_config(weigth_bits=4)
    with pytest.raises(TypeError, match="ExportConfig"):
        export_config({"weight_bits": 4})  # type: ignore[arg-type]


def test_first_and_last_layers_stay_uniform() -> None:
    cfg = ExportConfig(space=Space.SQRT, weight_bits=4, overrides={"a": {"space": "sqrt"}, "b": {"bits": 3}})
    ends = frozenset({"end", "a"})
    assert cfg.layer_bits_space("mid", ends) == (4, Space.SQRT)
    assert cfg.layer_bits_space("end", ends) == (4, Space.UNIFORM)
    assert cfg.layer_bits_space("a", ends) == (4, Space.SQRT)
    assert cfg.layer_bits_space("b", ends) == (3, Space.SQRT)
    assert dataclasses.replace(cfg, transform_first_last=True).layer_bits_space("end", ends) == (4, Space.SQRT)


def test_config_and_keywords_write_the_same_bytes(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(weight_bits=4, space="sqrt", per_channel=True, overrides={"2": {"bits": 6}},
                              transform_first_last=True)
    by_kw = export_onnx_qdq(_net(), _calib(), tmp_path / "kw.onnx", **kw)
    cfg = ExportConfig(weight_bits=4, space=Space.SQRT, overrides={"2": {"bits": 6}}, transform_first_last=True)
    by_cfg = export_onnx_qdq(_net(), _calib(), tmp_path / "cfg.onnx", cfg)
    mixed = export_onnx_qdq(_net(), _calib(), tmp_path / "mix.onnx", ExportConfig(weight_bits=8),
                            weight_bits=4, space="sqrt", overrides={"2": {"bits": 6}}, transform_first_last=True)
    data = by_kw.path.read_bytes()
    assert by_cfg.path.read_bytes() == data and mixed.path.read_bytes() == data
    assert by_kw.settings == by_cfg.settings == mixed.settings
    assert by_kw.settings["overrides"] == {"2": {"bits": 6}} and by_kw.settings["space"] == "sqrt"
    assert [w.bits for w in by_kw.weights] == [4, 6, 4]
