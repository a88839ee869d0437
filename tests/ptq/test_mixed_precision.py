"""ptq.mixed_precision is the home of the mixed-precision helpers (presets re-exports them)."""

from __future__ import annotations

from requant_plugin.ptq import allocate_bits, layer_error_curves, mixed_precision, presets


def test_presets_reexports_the_mixed_precision_helpers() -> None:
    assert presets.allocate_bits is mixed_precision.allocate_bits is allocate_bits
    assert presets.layer_error_curves is mixed_precision.layer_error_curves is layer_error_curves
