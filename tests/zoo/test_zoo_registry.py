"""Tests for model names, weight resolution and safe state_dict loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from requant_plugin.data import cifar10_available, evaluate_accuracy, load_cifar10
from requant_plugin.zoo import (
    MODELS_DIR_ENV,
    CifarResNet,
    available_models,
    build_model,
    default_weights_path,
    is_model_name,
    load_model,
    load_state_dict_file,
    packaged_weights_path,
    resnet20,
    resnet56,
)


def _marker_path(tmp: Path) -> Path:
    return tmp / "pwned"


def _touch(path: str) -> None:
    Path(path).write_text("executed")


class _Evil:
    """Pickles to a call of :func:`_touch`: must never run under weights_only loading."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_touch, (self.path,))


def _shared_weights(name: str) -> Path | None:
    path = default_weights_path(name)
    return path if path is not None and path.is_file() else None


@pytest.fixture
def no_models_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)


def test_available_models() -> None:
    assert available_models() == ["mobilenetv2", "resnet20", "resnet32", "resnet44", "resnet56"]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="mobilenetv2, resnet20, resnet32, resnet44, resnet56"):
        load_model("resnet18", weights="unused.pt")
    with pytest.raises(ValueError, match="valid names"):
        build_model("vgg")


@pytest.mark.parametrize("name, blocks", [("resnet8", 1), ("ResNet-110", 18), ("resnet_1202", 200)])
def test_any_cifar_resnet_depth_by_name(name: str, blocks: int, tmp_path: Path) -> None:
    """``resnet<6n+2>`` builds the depth (n blocks per stage) and loads its own weights file."""
    assert is_model_name(name)
    model = build_model(name)
    assert isinstance(model, CifarResNet) and len(model.layer1) == len(model.layer3) == blocks
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(name, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("name", ["resnet21", "resnet2", "resnet", "resnet18x"])
def test_resnet_depth_that_is_not_6n_plus_2_is_refused(name: str) -> None:
    assert not is_model_name(name)
    with pytest.raises(ValueError, match=r"resnet<d> for any CIFAR ResNet depth d = 6n \+ 2"):
        build_model(name)


def test_models_dir_argument(tmp_path: Path, no_models_env: None) -> None:
    source = resnet20()
    torch.save(source.state_dict(), tmp_path / "cifar10_resnet20.pt")
    model = load_model("resnet20", models_dir=tmp_path)
    assert not model.training
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_env_var_and_explicit_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    torch.save(resnet20().state_dict(), env_dir / "cifar10_resnet20.pt")
    monkeypatch.setenv(MODELS_DIR_ENV, str(env_dir))
    assert default_weights_path("resnet20") == env_dir / "cifar10_resnet20.pt"
    load_model("resnet20")
    explicit = resnet20()
    torch.save(explicit.state_dict(), tmp_path / "mine.pt")
    model = load_model("resnet20", weights=tmp_path / "mine.pt")
    assert torch.equal(model.state_dict()["linear.weight"], explicit.state_dict()["linear.weight"])


def test_checkpoint_wrapper_and_module_prefix(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in resnet20().state_dict().items()}
    torch.save({"state_dict": state, "best_prec1": 91.7}, tmp_path / "ckpt.th")
    loaded = load_state_dict_file(tmp_path / "ckpt.th")
    assert "conv1.weight" in loaded and len(loaded) == 116


def test_missing_file_has_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_model("resnet20", weights=missing)
    message = str(info.value)
    assert str(missing) in message and "--weights" in message and MODELS_DIR_ENV in message


def test_missing_default_file_names_path(tmp_path: Path, no_models_env: None) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar10_resnet44\.pt"):
        load_model("resnet44", models_dir=tmp_path)


def test_no_shared_folder(monkeypatch: pytest.MonkeyPatch, no_models_env: None) -> None:
    import requant_plugin.data.datasets as datasets

    monkeypatch.setattr(datasets, "find_shared_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match=MODELS_DIR_ENV):
        load_model("resnet20")


def test_corrupt_files_rejected(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 50)
    with pytest.raises(ValueError, match=r"garbage\.pt"):
        load_model("resnet20", weights=garbage)
    good = tmp_path / "good.pt"
    torch.save(resnet20().state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt"):
        load_model("resnet20", weights=truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        load_model("resnet20", weights=empty)


def test_pickled_object_rejected_without_running_it(tmp_path: Path) -> None:
    marker = _marker_path(tmp_path)
    state = dict(resnet20().state_dict())
    state["extra"] = _Evil(marker)  # type: ignore[assignment]
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_model("resnet20", weights=path)
    assert not marker.exists()


def test_non_tensor_values_rejected(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pt"
    torch.save({"conv1.weight": 3}, path)
    with pytest.raises(ValueError, match="not named tensors"):
        load_state_dict_file(path)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_state_dict_file(tmp_path / "list.pt")


def test_state_dict_mismatch_names_keys(tmp_path: Path) -> None:
    path = tmp_path / "r20.pt"
    torch.save(resnet20().state_dict(), path)
    with pytest.raises(ValueError, match=r"missing keys: .*layer1\.3") as info:
        load_model("resnet56", weights=path)
    assert "unexpected" not in str(info.value)
    state = dict(resnet56().state_dict())
    state["linear.weight"] = torch.zeros(100, 64)
    state["bogus.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        load_model("resnet56", weights=path)
    assert "unexpected keys: bogus.weight" in str(info.value)
    assert "shape mismatches: linear.weight" in str(info.value)


@pytest.mark.skipif(_shared_weights("resnet20") is None, reason="shared ResNet weights not found")
@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_shared_weights_load_strictly(name: str) -> None:
    path = _shared_weights(name)
    if path is None:
        pytest.skip(f"shared {name} weights not found")
    model = load_model(name)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(raw, strict=True)
    assert len(raw) == len(model.state_dict())


@pytest.mark.skipif(
    _shared_weights("resnet20") is None or not cifar10_available(),
    reason="needs the shared CIFAR-10 test arrays and ResNet weights",
)
@pytest.mark.parametrize(("name", "floor"), [("resnet20", 83.0), ("resnet56", 84.0)])
def test_shared_weights_accuracy_on_subset(name: str, floor: float) -> None:
    data = load_cifar10(train_limit=0, test_limit=1000, seed=0)
    accuracy = evaluate_accuracy(load_model(name), data.loader("test", batch_size=500))
    assert accuracy > floor


def test_packaged_mobilenetv2_loads_without_a_models_folder(tmp_path: Path, no_models_env: None) -> None:
    """The MobileNetV2 weights ship with the package: an empty models folder falls back to them."""
    packaged = packaged_weights_path("mobilenetv2")
    assert packaged is not None and packaged.is_file()
    assert default_weights_path("mobilenetv2", models_dir=tmp_path) == packaged
    model = load_model("mobilenetv2", models_dir=tmp_path)
    assert not model.training
    assert packaged_weights_path("resnet20") is None


def test_models_folder_file_wins_over_packaged_weights(tmp_path: Path, no_models_env: None) -> None:
    mine = build_model("mobilenetv2")
    torch.save(mine.state_dict(), tmp_path / "cifar10_mobilenetv2.pt")
    assert default_weights_path("mobilenetv2", models_dir=tmp_path) == tmp_path / "cifar10_mobilenetv2.pt"
    model = load_model("mobilenetv2", models_dir=tmp_path)
    for key, value in mine.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.skipif(not cifar10_available(), reason="needs the shared CIFAR-10 arrays")
def test_packaged_mobilenetv2_is_trained() -> None:
    """The shipped weights classify CIFAR-10 (the full test-set figure is in its .json)."""
    data = load_cifar10(test_limit=1000, train_limit=1)
    model = load_model("mobilenetv2", weights=packaged_weights_path("mobilenetv2"))
    acc = evaluate_accuracy(model, [(data.x_test[i:i + 500], data.y_test[i:i + 500]) for i in range(0, 1000, 500)])
    assert acc > 80.0
