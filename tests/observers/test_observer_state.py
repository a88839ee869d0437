"""state_dict round trips (before and after data), inference mode, deep copies and CUDA."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.observers import PerChannelREQuantObserver, REQuantObserver, REQuantWeightObserver

FACTORIES = {
    "activation": lambda: REQuantObserver(quant_min=0, quant_max=127),
    "weight": lambda: REQuantWeightObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-8,
                                            quant_max=7),
    "per_channel": lambda: PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                     quant_min=-8, quant_max=7),
}


def _data(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.relu(torch.randn(6, 5, 4, 4, generator=g) * (i + 1)) - 0.1 for i in range(3)]


def _roundtrip(state: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint would go."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_state_dict_roundtrip_after_data(kind: str) -> None:
    obs = FACTORIES[kind]()
    for x in _data():
        obs(x)
    fresh = FACTORIES[kind]()
    fresh.load_state_dict(_roundtrip(obs.state_dict()))
    for a, b in zip(obs.calculate_qparams(), fresh.calculate_qparams(), strict=True):
        assert torch.equal(a, b)
    for name, buf in obs.named_buffers():
        assert torch.equal(buf, dict(fresh.named_buffers())[name]), name


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_state_dict_roundtrip_before_any_data(kind: str) -> None:
    empty = FACTORIES[kind]().state_dict()
    trained = FACTORIES[kind]()
    for x in _data(1):
        trained(x)
    trained.load_state_dict(_roundtrip(empty))  # shrinks data-sized buffers back to empty
    with pytest.warns(UserWarning, match="must run observer"):
        s, z = trained.calculate_qparams()
    assert float(s) == 1.0 and int(z) == 0
    for x in _data(2):  # and it still calibrates afterwards
        trained(x)
    ref = FACTORIES[kind]()
    for x in _data(2):
        ref(x)
    assert torch.equal(trained.calculate_qparams()[0], ref.calculate_qparams()[0])


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_calibration_under_inference_mode(kind: str) -> None:
    obs, ref = FACTORIES[kind](), FACTORIES[kind]()
    with torch.inference_mode():
        for x in _data(3):
            obs(x)
    for x in _data(3):
        ref(x)
    assert all(torch.equal(a, b) for a, b in zip(obs.calculate_qparams(), ref.calculate_qparams(), strict=True))
    assert not any(b.is_inference() for b in obs.buffers())  # buffers updated in place
    copy.deepcopy(obs).load_state_dict(obs.state_dict())


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()


def test_prepared_fx_model_state_reloads_into_fresh_prepare() -> None:
    """Observer statistics saved from a calibrated prepared model give a bit-identical
    converted model when loaded into a freshly prepared one (the Lightning checkpoint path)."""
    torch.backends.quantized.engine = "x86"
    net = _tiny_net()
    calib = [torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    mapping = get_requant_qconfig_mapping(backend="x86")
    prepared = prepare_fx(copy.deepcopy(net), mapping, (calib[0],))
    with torch.inference_mode():
        for x in calib:
            prepared(x)
    state = _roundtrip({k: v for k, v in prepared.state_dict().items() if "activation_post_process" in k})
    assert state, "no observer state found"
    fresh = prepare_fx(copy.deepcopy(net), mapping, (calib[0],))
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if "activation_post_process" in k]
    x = torch.randn(2, 3, 12, 12)
    assert torch.equal(convert_fx(prepared)(x), convert_fx(fresh)(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", list(FACTORIES))
def test_cuda_matches_cpu(kind: str) -> None:  # pragma: no cover - no GPU in CI
    cpu, gpu = FACTORIES[kind](), FACTORIES[kind]().cuda()
    for x in _data(4):
        cpu(x)
        gpu(x.cuda())
    s_cpu, _ = cpu.calculate_qparams()
    s_gpu, _ = gpu.calculate_qparams()
    assert s_gpu.device.type == "cuda"
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=1e-3, atol=0)
    fresh = FACTORIES[kind]().cuda()
    fresh.load_state_dict(gpu.state_dict())
    assert torch.equal(fresh.calculate_qparams()[0], s_gpu)
