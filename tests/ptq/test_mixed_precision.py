"""ptq.mixed_precision is the home of the mixed-precision helpers (presets re-exports them)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from requant_plugin import quantize_weights
from requant_plugin.ptq import (
    allocate_bits,
    layer_error_curves,
    mixed_precision,
    mixed_precision_bits,
    presets,
    weight_counts,
    width_summary,
)


def test_presets_reexports_the_mixed_precision_helpers() -> None:
    assert presets.allocate_bits is mixed_precision.allocate_bits is allocate_bits
    assert presets.layer_error_curves is mixed_precision.layer_error_curves is layer_error_curves


class _TwoHeads(nn.Module):
    """logits = 3 a(x) + 0.03 b(x): the network reads a's output 100x louder than b's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(16, 8), nn.Linear(16, 8)
        with torch.no_grad():
            self.b.weight[:, 0] *= 8.0  # an outlier column: b's 2-bit grid is the coarser, relative to its output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.a(x) + 0.03 * self.b(x)


def test_network_sensitivity_spends_the_bits_where_the_output_listens() -> None:
    net, x = _TwoHeads(), [torch.randn(64, 16, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    layer = layer_error_curves(net, x, (2, 8), sensitivity="layer")
    network = layer_error_curves(net, x, (2, 8))
    assert layer["b"][2] > layer["a"][2]  # on its own, b looks the worse layer at 2 bits
    assert network["a"][2] > 100 * network["b"][2]  # to the output, a matters far more
    sizes = {"a": 128, "b": 128}
    assert allocate_bits(layer, sizes, 5.0) == {"a": 2, "b": 8}
    assert allocate_bits(network, sizes, 5.0) == {"a": 8, "b": 2}
    assert mixed_precision_bits(net, x, 5.0, (2, 8)) == {"a": 8, "b": 2}
    with pytest.raises(ValueError, match="unknown sensitivity 'output'"):
        layer_error_curves(net, x, (2, 8), sensitivity="output")


def test_progress_shows_a_bar_over_the_layers_and_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    net, x = _TwoHeads(), [torch.randn(64, 16, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    quiet = mixed_precision_bits(net, x, 5.0, (2, 8))
    assert "mixed precision" not in capsys.readouterr().err
    assert mixed_precision_bits(net, x, 5.0, (2, 8), progress=True) == quiet
    assert "mixed precision: 100%" in capsys.readouterr().err  # tqdm's bar on stderr, both layers done


def test_symmetric_curves_for_a_symmetric_recipe() -> None:
    """``symmetric=True`` measures the layers on the grid a symmetric recipe uses (no zero point), and the widths
    follow those curves."""
    net, x = _TwoHeads(), [torch.randn(64, 16, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    asym = layer_error_curves(net, x, (2, 3, 8))
    sym = layer_error_curves(net, x, (2, 3, 8), symmetric=True)
    assert sym["a"][2] != asym["a"][2]
    sizes = {"a": 128, "b": 128}
    assert mixed_precision_bits(net, x, 4.0, (2, 3, 8), symmetric=True) == allocate_bits(sym, sizes, 4.0)


def test_network_curves_estimate_the_kl_of_quantizing_one_layer() -> None:
    # second order: e_l(b) ~ KL(p_float || p_quant) with only layer l at b bits (its "beyond" weight, nearest
    # rounding, every other layer float); within 2x on an MLP at 4 bits, where the perturbation is small
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    with torch.no_grad():
        net[4].weight *= 4.0  # confident logits, so the KL is not vanishingly small
    data = [torch.randn(128, 16, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    curves = layer_error_curves(net, data, (4,), rounding="nearest")
    x = torch.cat(data)
    with torch.no_grad():
        lp = torch.log_softmax(net(x).double(), 1)
    for name in curves:
        q, _ = quantize_weights(net, 4, recipe="beyond", calibration_data=data, rounding="nearest",
                                bias_correction=False, inputs="float",
                                overrides={n: {"skip": True} for n in curves if n != name})
        with torch.no_grad():
            lq = torch.log_softmax(q(x).double(), 1)
        kl = float((lp.exp() * (lp - lq)).sum(1).mean())
        assert 0.5 * kl < curves[name][4] < 2.0 * kl, (name, kl, curves[name][4])


class _AuxHead(nn.Module):
    """An auxiliary head called in training only (Inception's AuxLogits) and a dropout before the classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.aux, self.drop, self.head = nn.Linear(8, 8), nn.Linear(8, 3), nn.Dropout(0.5), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.body(x))
        out = self.head(self.drop(y))
        return out + self.aux(y) if self.training else out


def test_training_only_layers_are_left_out_and_the_mode_does_not_matter() -> None:
    data = [torch.randn(32, 8, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    with pytest.warns(UserWarning, match=r"\['aux'\] are not called by the model's eval-mode forward"):
        in_train = layer_error_curves(_AuxHead().train(), data, (2, 4))
    with pytest.warns(UserWarning, match="aux"):
        in_eval = layer_error_curves(_AuxHead().eval(), data, (2, 4))
    assert set(in_train) == {"body", "head"} and in_train == in_eval  # the Fisher pass runs in eval mode too
    with pytest.warns(UserWarning, match="aux"):
        assert set(mixed_precision_bits(_AuxHead().eval(), data, 3.0, (2, 4))) == {"body", "head"}


def test_width_summary_counts_layers_and_weighs_bits_by_size() -> None:
    hist, mean = width_summary({"a": 8, "b": 2, "c": 2}, {"a": 100, "b": 300, "c": 600})
    assert list(hist.items()) == [(2, 2), (8, 1)]  # narrowest first
    assert mean == (8 * 100 + 2 * 900) / 1000
    assert width_summary({}, {}) == ({}, 0.0)
    assert weight_counts(_TwoHeads(), ["a", "b"]) == {"a": 128, "b": 128}
