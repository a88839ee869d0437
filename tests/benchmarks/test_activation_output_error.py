"""``benchmarks.activation_output_error``: scaled observer ranges reach the converted model,
and the summary's ratios are right on known numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import benchmarks.activation_output_error as aoe
from requant_plugin import get_requant_qconfig_mapping


def test_scaled_ranges_reach_the_converted_model() -> None:
    from torch.ao.quantization.quantize_fx import convert_fx

    torch.backends.quantized.engine = "x86"
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    calib = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    before = {id(p) for p in net.parameters()}
    prep: Any = aoe.prepare_calibrated(net, get_requant_qconfig_mapping(), calib)[0]
    assert {id(p) for p in net.parameters()} == before  # the model itself is not prepared in place
    scale: Any = aoe.scaled_ranges
    base: Any = convert_fx(scale(prep, 1.0))
    scaled: Any = convert_fx(scale(prep, 0.9))
    scales = [(float(a.scale), float(b.scale)) for a, b in zip(base.modules(), scaled.modules(), strict=True)
              if isinstance(a, torch.ao.nn.quantized.Conv2d)]
    assert scales and all(b == pytest.approx(0.9 * a, rel=1e-6) for a, b in scales)
    # the prepared model itself is left as it was
    first: Any = convert_fx(prep).get_submodule("0")
    assert float(first.scale) == pytest.approx(scales[0][0], rel=1e-6)


def _res() -> dict:
    return {"resnet56": {"default": [(0.13, 0.99, 1.0), (0.14, 0.98, 1.0)],
                         "requant": [(0.12, 0.99, 1.0), (0.15, 0.98, 1.0)],
                         "exact": [(0.125, 0.99, 1.0), (0.13, 0.99, 1.0)],
                         "x0.95": [(0.11, 0.99, 0.95), (0.12, 0.99, 0.95)],
                         "refined": [(0.117, 0.99, 0.93), (0.126, 0.99, 0.96)]}}


def test_summary_pairs_by_seed(tmp_path: Path) -> None:
    md = aoe.markdown(_res(), [0, 1], 500, "python -m benchmarks.activation_output_error")
    r = (0.12 / 0.13 + 0.15 / 0.14) / 2
    assert f"REQuant (factory default) / torch default, logit MSE ratio {r:.3f} on average" in md
    assert "lower on 1 of 2 seeds" in md
    assert "REQuant, exact histograms / torch default, logit MSE ratio" in md and "lower on 2 of 2 seeds" in md
    mean_ratio = (0.115 / 0.1275 - 1) * 100
    assert f"| exact REQuant ranges x 0.95 | 0.1100 | 0.1200 | 0.1150 | {mean_ratio:+.1f} % | 2/2 |" in md
    assert "| REQuant + `refine_activation_ranges` (factor 0.930-0.960) | 0.1170 | 0.1260 |" in md
    r_ref = (0.117 / 0.13 + 0.126 / 0.14) / 2
    assert f"refine_activation_ranges` / torch default, logit MSE ratio {r_ref:.3f}" in md
    png = aoe.plot(_res(), [0.95], tmp_path / "o.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_factor_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        aoe.main(["--factors", "1.0", "--no-write"])
    assert "--factors" in capsys.readouterr().err


def test_without_cifar_it_says_where_to_point(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(aoe, "cifar10_available", lambda: False)
    assert aoe.main(["--no-write"]) == 2
    assert "REQUANT_SHARED_DIR" in capsys.readouterr().err
