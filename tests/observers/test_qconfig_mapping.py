"""``get_requant_qconfig_mapping`` through ``prepare_fx`` / ``convert_fx``: real quantized modules,
per-backend dtypes and ranges, symmetric-weight backends, torch's special entries kept."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.ao.quantization import QConfig, get_default_qconfig_mapping
from torch.ao.quantization.observer import FixedQParamsObserver, PerChannelMinMaxObserver
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import requant_plugin
from requant_plugin.observers import PerChannelREQuantObserver, REQuantObserver, REQuantWeightObserver
from requant_plugin.qconfig import get_requant_qconfig, get_requant_qconfig_mapping


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


@pytest.fixture(scope="module")
def net_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # non-trivial BN statistics so that folding matters
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(1)
    return net.eval(), [torch.randn(8, 3, 10, 10, generator=g) for _ in range(4)]


def _quantize(net: nn.Module, mapping, data: list[torch.Tensor]) -> nn.Module:
    prepared = prepare_fx(copy.deepcopy(net), mapping, (data[0],))
    with torch.no_grad():
        for x in data:
            prepared(x)
    return convert_fx(prepared)


def test_lazy_exports_resolve() -> None:
    assert requant_plugin.get_requant_qconfig_mapping is get_requant_qconfig_mapping
    assert requant_plugin.get_requant_qconfig is get_requant_qconfig


@pytest.mark.parametrize("backend", ["x86", "fbgemm", "onednn", "qnnpack"])
def test_converted_modules_are_quantized(backend: str, net_and_data) -> None:
    """A wrong dtype leaves float modules without any warning (integration.md §1.4): assert types."""
    net, data = net_and_data
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend if backend != "fbgemm" else "fbgemm"
    try:
        q = _quantize(net, get_requant_qconfig_mapping(backend=backend), data)
        assert isinstance(q.conv1, torch.ao.nn.intrinsic.quantized.ConvReLU2d)
        assert isinstance(q.conv2, torch.ao.nn.quantized.Conv2d)
        assert isinstance(q.fc, torch.ao.nn.quantized.Linear)
        x = torch.randn(3, 3, 10, 10)
        with torch.no_grad():
            ref = net(x)
            out = q(x)
        assert out.shape == ref.shape
        assert float(((out - ref) ** 2).mean() / (ref**2).mean()) < 0.05  # real int8 model, still close
    finally:
        torch.backends.quantized.engine = old


def test_x86_observer_settings(net_and_data) -> None:
    net, data = net_and_data
    prepared = prepare_fx(copy.deepcopy(net), get_requant_qconfig_mapping(), (data[0],))
    acts = [m for m in prepared.modules() if isinstance(m, REQuantObserver)]
    assert acts and all((a.dtype, a.quant_min, a.quant_max, a.qscheme) ==
                        (torch.quint8, 0, 127, torch.per_tensor_affine) for a in acts)
    qc = get_requant_qconfig()
    w = qc.weight()
    assert isinstance(w, PerChannelREQuantObserver)
    assert (w.dtype, w.quant_min, w.quant_max, w.qscheme, w.ch_axis) == (
        torch.qint8, -128, 127, torch.per_channel_symmetric, 0)


@pytest.mark.parametrize(("backend", "bits", "act", "weight"), [
    ("x86", 4, (torch.quint8, 0, 15), (torch.qint8, -8, 7)),
    ("x86", 8, (torch.quint8, 0, 127), (torch.qint8, -128, 127)),
    ("qnnpack", 8, (torch.quint8, 0, 255), (torch.qint8, -128, 127)),
    ("onednn", 6, (torch.quint8, 0, 63), (torch.qint8, -32, 31)),
    ("tensorrt", 8, (torch.qint8, -127, 127), (torch.qint8, -127, 127)),
    ("tensorrt", 4, (torch.qint8, -7, 7), (torch.qint8, -7, 7)),
])
def test_ranges_per_backend(backend: str, bits: int, act: tuple, weight: tuple) -> None:
    qc = get_requant_qconfig(weight_bits=bits, act_bits=bits, backend=backend)
    a, w = qc.activation(), qc.weight()
    assert (a.dtype, a.quant_min, a.quant_max) == act
    assert (w.dtype, w.quant_min, w.quant_max) == weight
    if backend == "tensorrt":  # TensorRT: zero point 0 everywhere, scale amax / 127
        assert a.qscheme == torch.per_tensor_symmetric
        a(torch.tensor([-2.0, 1.0, 0.5]))
        a_ = get_requant_qconfig(backend="tensorrt", search="minmax").activation()
        a_(torch.tensor([-2.54, 1.0]))
        s, z = a_.calculate_qparams()
        assert int(z) == 0 and float(s) == pytest.approx(2.54 / 127)


def test_reduce_range_is_expressed_with_quant_min_max() -> None:
    """x86's 7-bit activations come from quant_min/quant_max, not reduce_range (which warns)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = get_requant_qconfig(backend="x86").activation()
    assert (a.quant_min, a.quant_max, a.reduce_range) == (0, 127, False)
    assert get_requant_qconfig(backend="x86", reduce_range=False).activation().quant_max == 255


@pytest.mark.parametrize("backend", ["onednn", "tensorrt"])
def test_asymmetric_weights_rejected_on_symmetric_backends(backend: str) -> None:
    with pytest.raises(ValueError, match="symmetric weights"):
        get_requant_qconfig_mapping(backend=backend, weight_symmetric=False)
    with pytest.raises(ValueError, match="symmetric"):
        get_requant_qconfig_mapping(backend="tensorrt", act_symmetric=False)


def test_asymmetric_weights_allowed_on_x86(net_and_data) -> None:
    net, data = net_and_data
    q = _quantize(net, get_requant_qconfig_mapping(backend="x86", weight_symmetric=False), data)
    zps = q.conv2.weight().q_per_channel_zero_points()
    assert q.conv2.weight().qscheme() == torch.per_channel_affine and bool((zps != 0).any())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        get_requant_qconfig_mapping(backend="cuda")
    with pytest.raises(ValueError, match="bits"):
        get_requant_qconfig_mapping(weight_bits=9)
    with pytest.raises(ValueError, match="weight_search"):
        get_requant_qconfig(weight_search="mse")


def test_per_tensor_weights_and_special_entries_kept() -> None:
    mapping = get_requant_qconfig_mapping(per_channel=False, search="grid")
    assert isinstance(mapping.global_qconfig.weight(), REQuantWeightObserver)
    default = get_default_qconfig_mapping("x86")
    assert set(mapping.object_type_qconfigs) == set(default.object_type_qconfigs)
    sig = mapping.object_type_qconfigs[torch.nn.Sigmoid].activation()
    assert isinstance(sig, FixedQParamsObserver) and float(sig.scale) == 1 / 256
    tconv = mapping.object_type_qconfigs[torch.nn.ConvTranspose2d]
    assert isinstance(tconv.activation(), REQuantObserver) and isinstance(tconv.weight(), REQuantWeightObserver)
    assert isinstance(mapping.object_type_qconfigs[torch.nn.LayerNorm], QConfig)


def test_minmax_search_reproduces_default_weights(net_and_data) -> None:
    """search='minmax' weights are torch's PerChannelMinMaxObserver's, even after BN folding."""
    net, data = net_and_data
    q = _quantize(net, get_requant_qconfig_mapping(search="minmax"), data)
    folded = torch.ao.quantization.fuse_modules(copy.deepcopy(net), [["conv2", "bn2"]])
    ref = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    ref(folded.conv2.weight)
    assert torch.equal(q.conv2.weight().q_per_channel_scales().float(), ref.calculate_qparams()[0])


@pytest.mark.parametrize("size", [None, 2048])
def test_act_sample_size_reaches_the_activation_observers(net_and_data, size: int | None) -> None:
    """``act_sample_size=None`` bins every activation value (exact counts per batch); a number
    is handed to every activation observer of the prepared graph."""
    net, _ = net_and_data
    big = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    mapping = get_requant_qconfig_mapping(act_sample_size=size)
    prepared = prepare_fx(copy.deepcopy(net), mapping, (big[0],))
    acts = [m for m in prepared.modules() if isinstance(m, REQuantObserver)]
    assert acts and all(a.sample_size == size for a in acts)
    with torch.no_grad():
        for x in big:
            prepared(x)
    stem = next(a for a in acts if a.hist_count.numel())  # the input observer: 8 * 3 * 32 * 32 values a batch
    assert float(stem.hist_count.sum()) == pytest.approx(2 * 8 * 3 * 32 * 32, rel=1e-12)
    if size is None:  # every value binned: the per-bin sums are the data's, exactly as summed in float64
        total = sum(float(x.double().sum()) for x in big)
        assert float(stem.hist_sum.sum()) == pytest.approx(total, rel=1e-9, abs=1e-6)
    with pytest.raises(ValueError, match="sample_size"):
        get_requant_qconfig(act_sample_size=10).activation()
