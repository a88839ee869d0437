"""A ``quantize_weights`` result (``recipe="beyond"``) carried through torch.ao FX:
``get_requant_qconfig_mapping(weight_ranges=report)`` pins every layer's grid, and the converted
x86 int8 modules hold exactly the codes REQuant chose.

References: the quantized float model's own weights (codes recomputed here from its grid) and
the int8 weights torch's converted modules store; errors for off-grid weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from refs.nets import UpNet
from torch import nn
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from requant_plugin import quantize_weights
from requant_plugin.observers import PinnedWeightObserver, pinned_grids, pinned_weight_args
from requant_plugin.qconfig import get_requant_qconfig_mapping


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(y))
        return self.fc(torch.flatten(self.pool(y), 1))


CALIB = [torch.randn(16, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model


def _convert(model: nn.Module, mapping) -> nn.Module:
    prepared = prepare_fx(copy.deepcopy(model), mapping, (CALIB[0],))
    with torch.no_grad():
        for x in CALIB:
            prepared(x)
    return convert_fx(prepared)


@pytest.mark.parametrize("recipe", ["beyond", "beyond-tensorrt"])
def test_converted_int8_modules_hold_the_chosen_codes(net: nn.Module, recipe: str) -> None:
    qmodel, rep = quantize_weights(net, 4, recipe=recipe, fold_bn=True, calibration_data=CALIB)
    converted = _convert(qmodel, get_requant_qconfig_mapping(weight_bits=4, weight_ranges=rep))
    plain = _convert(qmodel, get_requant_qconfig_mapping(weight_bits=4))
    kinds = [type(m).__name__ for m in converted.modules()]
    assert kinds == [type(m).__name__ for m in plain.modules()]  # the same quantized graph
    for layer in rep.layers:
        est = layer.estimate
        qw = converted.get_submodule(layer.name).weight()
        assert qw.is_quantized and qw.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        w = qmodel.get_submodule(layer.name).weight.detach().double()
        shape = (-1,) + (1,) * (w.dim() - 1)
        args = pinned_weight_args(est)
        s = torch.tensor(args["scale"], dtype=torch.float64).reshape(shape)
        z = torch.tensor(args["zero_point"], dtype=torch.float64).reshape(shape)
        codes = torch.round(w / s + z)
        assert torch.equal(qw.int_repr().double(), codes)
        assert int(codes.min()) >= args["quant_min"] and int(codes.max()) <= args["quant_max"]
        torch.testing.assert_close(qw.dequantize().double(), w, rtol=1e-6, atol=1e-7)
    # the pinned model tracks the weight-quantized float model (only activations are added)
    with torch.no_grad():
        ref, out = qmodel(CALIB[0]), converted(CALIB[0])
    assert float((out - ref).abs().max()) < 0.1 * float(ref.abs().max())


def _observer(rep) -> PinnedWeightObserver:
    return PinnedWeightObserver(grids=pinned_grids(rep), qscheme=torch.per_channel_affine, quant_min=-8, quant_max=7)


def test_each_weight_finds_its_own_grid_and_state_round_trips(net: nn.Module) -> None:
    qmodel, rep = quantize_weights(net, 4, recipe="beyond", fold_bn=True, calibration_data=CALIB)
    for layer in rep.layers:
        obs = _observer(rep)
        with pytest.warns(UserWarning, match="must run observer"):
            obs.calculate_qparams()  # nothing observed yet: torch's default qparams
        w = qmodel.get_submodule(layer.name).weight
        assert obs(w) is w and obs.layer == layer.name
        scale, zp = obs.calculate_qparams()
        args = pinned_weight_args(layer.estimate)
        assert scale.tolist() == torch.tensor(args["scale"], dtype=torch.float32).tolist()
        assert zp.tolist() == args["zero_point"]
        fresh = _observer(rep)
        fresh.load_state_dict(obs.state_dict())
        assert torch.equal(fresh.calculate_qparams()[0], scale) and torch.equal(fresh.calculate_qparams()[1], zp)
        assert layer.name in repr(obs)
    with pytest.raises(ValueError, match="lies on no grid"):
        _observer(rep)(net.conv2.weight)  # the float weight


def test_repeated_weight_is_skipped_and_a_changed_one_rechecked(net: nn.Module) -> None:
    """pt2e observes the weight on every batch: the same tensor is matched once; a weight changed
    in place (new version) or another layer's weight is matched again."""
    qmodel, rep = quantize_weights(net, 4, recipe="beyond", fold_bn=True, calibration_data=CALIB)
    obs = _observer(rep)
    w1 = qmodel.get_submodule(rep.layers[0].name).weight.detach().clone()
    w2 = qmodel.get_submodule(rep.layers[1].name).weight.detach().clone()
    obs(w1)
    key = obs.calibrator.weight_key
    assert obs(w1) is w1 and obs.calibrator.weight_key == key and obs.layer == rep.layers[0].name
    obs(w2)
    assert obs.layer == rep.layers[1].name
    with torch.no_grad():
        w2.add_(1e-3 * torch.rand_like(w2))  # off the grid, same storage
    with pytest.raises(ValueError, match="lies on no grid"):
        obs(w2)


def test_weights_off_the_grid_are_refused(net: nn.Module) -> None:
    """Quantized without folding BN: FX folds conv+bn at prepare, the weight leaves its grid."""
    qmodel, rep = quantize_weights(net, 4, recipe="beyond", calibration_data=CALIB)
    mapping = get_requant_qconfig_mapping(weight_bits=4, weight_ranges=rep)
    with pytest.raises(ValueError, match=r"conv1.*lies on no grid.*fold_bn=True"):
        _convert(qmodel, mapping)


def test_bad_arguments(net: nn.Module) -> None:
    _, rep = quantize_weights(net, 4, recipe="beyond", fold_bn=True, calibration_data=CALIB)
    with pytest.raises(ValueError, match="symmetric weights only"):
        get_requant_qconfig_mapping(weight_bits=4, backend="onednn", weight_ranges=rep)
    with pytest.raises(TypeError, match="QuantizationReport"):
        get_requant_qconfig_mapping(weight_bits=4, weight_ranges=[1])
    _, sq = quantize_weights(net, 4, calibration_data=CALIB)  # the paper's sqrt space: not uniform
    with pytest.raises(ValueError, match="non-uniform"):
        get_requant_qconfig_mapping(weight_bits=4, weight_ranges={"conv2": sq["conv2"].estimate})
    grid = dict(pinned_grids(rep)[0])
    with pytest.raises(ValueError, match="zero points outside"):
        PinnedWeightObserver(grids=[dict(grid, zero_point=[99] * len(grid["scale"]))], quant_min=-8, quant_max=7)
    with pytest.raises(ValueError, match="positive"):
        PinnedWeightObserver(grids=[dict(grid, scale=[0.0] * len(grid["scale"]))], quant_min=-8, quant_max=7)
    with pytest.raises(ValueError, match="exceed the observer's range"):
        PinnedWeightObserver(grids=[grid], quant_min=-4, quant_max=3)
    with pytest.raises(ValueError, match="needs the grids"):
        PinnedWeightObserver(grids=[])


@pytest.mark.parametrize("recipe", ["beyond", "beyond-tensorrt"])
def test_grid_args_keep_their_levels_in_signed_and_unsigned_codes(net: nn.Module, recipe: str) -> None:
    """``dtype=qint8`` and ``dtype=quint8`` describe the same levels in ``w``: the code range and
    the zero points shift together (signed codes for qint8, unsigned for quint8)."""
    _, rep = quantize_weights(net, 4, recipe=recipe, fold_bn=True, calibration_data=CALIB)
    est = rep.layers[1].estimate
    signed, unsigned = pinned_weight_args(est, dtype=torch.qint8), pinned_weight_args(est, dtype=torch.quint8)
    assert signed["quant_min"] < 0 <= unsigned["quant_min"]
    assert signed["quant_max"] - signed["quant_min"] == unsigned["quant_max"] - unsigned["quant_min"] == 15
    for args in (signed, unsigned):
        assert all(args["quant_min"] <= z <= args["quant_max"] for z in args["zero_point"])

    def levels(args: dict) -> torch.Tensor:
        codes = torch.arange(args["quant_min"], args["quant_max"] + 1, dtype=torch.float64)
        s = torch.tensor(args["scale"], dtype=torch.float64)[:, None]
        z = torch.tensor(args["zero_point"], dtype=torch.float64)[:, None]
        return (codes[None, :] - z) * s

    torch.testing.assert_close(levels(signed), levels(unsigned), rtol=0, atol=0)


def test_transposed_conv_keeps_a_per_tensor_range_with_a_warning() -> None:
    """Before: convert_fx failed ("Per Channel Quantization is currently disabled for transposed conv")
    on a per-channel report; now the transposed conv is warned about and gets a per-tensor range, the
    other layers keep their pinned codes."""
    from requant_plugin.observers.flows import quantize_fx

    torch.manual_seed(0)
    qmodel, rep = quantize_weights(UpNet().eval(), 4, recipe="beyond", fold_bn=True, calibration_data=CALIB)
    with pytest.warns(UserWarning, match=r"transposed convolutions with per-tensor weights only: \['t'\]"):
        mapping = get_requant_qconfig_mapping(weight_bits=4, weight_ranges=rep)
    converted, _ = quantize_fx(qmodel, mapping, CALIB, "x86")
    assert converted.get_submodule("t").weight().qscheme() == torch.per_tensor_affine
    args = pinned_weight_args(rep["c"].estimate)
    qw = converted.get_submodule("c").weight()
    s = torch.tensor(args["scale"], dtype=torch.float64).reshape(-1, 1, 1, 1)
    z = torch.tensor(args["zero_point"], dtype=torch.float64).reshape(-1, 1, 1, 1)
    assert torch.equal(qw.int_repr().double(), torch.round(qmodel.c.weight.detach().double() / s + z))
    with torch.no_grad():
        ref, out = qmodel(CALIB[0]), converted(CALIB[0])
    assert float((out - ref).abs().max()) < 0.25 * float(ref.abs().max())


class FunctionalHead(nn.Module):
    """A conv module, then a weight used through ``F.conv2d`` (not a layer quantize_weights sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.w = nn.Parameter(torch.randn(4, 8, 1, 1) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.relu(self.conv(x)), self.w, None, [1, 1], [0, 0], [1, 1], 1)


def test_a_functional_weight_on_no_grid_names_the_call_and_the_fix() -> None:
    torch.manual_seed(0)
    qmodel, rep = quantize_weights(FunctionalHead().eval(), 4, recipe="beyond", fold_bn=True, calibration_data=CALIB)
    mapping = get_requant_qconfig_mapping(weight_bits=4, weight_ranges=rep)
    with pytest.raises(ValueError, match=r"shape \(4, 8, 1, 1\).*lies on no grid.*functional call.*nn\.Conv2d.*pt2e"):
        _convert(qmodel, mapping)
