"""``convert_fx`` traps on x86: transposed convolutions match torch's reference graph (the x86
engine's own packing is wrong on some CPUs), and a functional convolution torch cannot lower fails
naming the call and the fix, whose rewrite then runs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from refs.nets import UpNet
from torch import nn

from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.observers.flows import default_mapping, prepare_calibrated, quantize_fx
from requant_plugin.observers.lowering import convert_fx_lowered, transposed_convs


class FunctionalConv(nn.Module):
    def __init__(self, positional: bool) -> None:
        super().__init__()
        self.positional = positional
        self.w = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.positional:  # noqa: SIM108 (torch lowers this form only)
            h = F.conv2d(x, self.w, None, [1, 1], [1, 1], [1, 1], 1)
        else:
            h = F.conv2d(x, self.w, padding=1)
        return self.fc(torch.relu(h).mean((2, 3)))  # type: ignore[no-any-return]


def _reference(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx

    return convert_to_reference_fx(copy.deepcopy(prepared))  # type: ignore[arg-type]


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("requant", [False, True], ids=["torch-default", "requant"])
def test_transposed_conv_lowers_like_the_reference_graph(dims: int, requant: bool) -> None:
    torch.manual_seed(0)
    model = UpNet(dims).eval()
    shape = (3, 8) if dims == 1 else (3, 8, 8)
    cal = [torch.randn(8, *shape) for _ in range(2)]
    x = torch.randn(8, *shape)
    mapping = get_requant_qconfig_mapping() if requant else default_mapping("x86")
    prepared, _ = prepare_calibrated(model, mapping, cal, "x86")
    assert transposed_convs(prepared) == ["t"]
    with torch.no_grad():
        ref = _reference(prepared)(x)
        out = convert_fx_lowered(copy.deepcopy(prepared))(x)
        flow, _ = quantize_fx(model, mapping, cal, "x86")
        out_flow = flow(x)
    assert torch.backends.quantized.engine == "x86"  # restored after the fbgemm conversion
    scale = float(ref.abs().max())
    # the lowered int8 kernels round differently from the float reference by a few output steps at most
    assert float((out - ref).abs().max()) < 0.1 * scale
    assert float((out_flow - ref).abs().max()) < 0.1 * scale


def test_functional_conv_failure_names_the_call_and_the_rewrite_runs() -> None:
    torch.manual_seed(0)
    cal = [torch.randn(4, 3, 6, 6)]
    mapping = get_requant_qconfig_mapping()
    with pytest.raises(RuntimeError, match=r"functional convolution\(s\) \['conv2d'\].*F\.conv2d\(x, w, None"):
        quantize_fx(FunctionalConv(positional=False).eval(), mapping, cal, "x86")
    model = FunctionalConv(positional=True).eval()
    q, _ = quantize_fx(model, mapping, cal, "x86")
    with torch.no_grad():
        ref = model(cal[0])
        assert float((q(cal[0]) - ref).abs().max()) < 0.1 * float(ref.abs().max())


class PReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.PReLU()
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.act(self.a(x)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("requant", [False, True], ids=["torch-default", "requant"])
def test_prelu_network_matches_the_float_model_and_the_users_module_is_untouched(requant: bool) -> None:
    """torch's lowered int8 nn.PReLU is far off (about 0.65 of the output's scale here); the flow
    traces it as F.prelu, which runs in float between quantized convs."""
    torch.manual_seed(0)
    model = PReLUNet().eval()
    cal = [torch.randn(8, 3, 6, 6) for _ in range(2)]
    mapping = get_requant_qconfig_mapping() if requant else default_mapping("x86")
    q, _ = quantize_fx(model, mapping, cal, "x86")
    with torch.no_grad():
        ref = model(cal[0])
        err = float((q(cal[0]) - ref).abs().max()) / float(ref.abs().max())
    assert err < 0.1
    assert type(model.act) is nn.PReLU
    assert not any(type(m) is nn.PReLU for m in q.modules())  # not lowered to an int8 PReLU either
