"""ptq.presets: recipes, quantize_beyond and the mixed-precision helpers."""

from __future__ import annotations

import itertools

import pytest
import torch
from refs.nets import DATA, make_seq_net

from requant_plugin import quantize_weights
from requant_plugin.ptq.presets import PRESETS, allocate_bits, layer_error_curves, quantize_beyond


def test_allocate_bits_is_optimal_on_convex_curves_and_respects_the_budget() -> None:
    # error halves per extra bit, with different scales: brute force over every assignment
    curves = {name: {b: scale * 2.0 ** -b for b in (2, 3, 4, 6, 8)}
              for name, scale in (("a", 1.0), ("b", 8.0), ("c", 0.5))}
    sizes = {"a": 100, "b": 50, "c": 400}
    for budget in (2.0, 3.0, 3.7, 5.0):
        got = allocate_bits(curves, sizes, budget)
        used = sum(sizes[n] * got[n] for n in got) / sum(sizes.values())
        assert used <= budget + 1e-12
        best = min(
            (sum(curves[n][b] for n, b in zip(curves, combo, strict=True)), combo)
            for combo in itertools.product(*[sorted(c) for c in curves.values()])
            if sum(sizes[n] * b for n, b in zip(curves, combo, strict=True)) <= budget * sum(sizes.values())
        )
        assert sum(curves[n][got[n]] for n in got) <= best[0] * 1.5  # greedy within 1.5x of optimum
    assert allocate_bits(curves, sizes, 2.0) == {"a": 2, "b": 2, "c": 2}
    with pytest.raises(ValueError, match="budget"):
        allocate_bits(curves, sizes, 1.5)


def test_layer_error_curves_fall_with_bits_and_drive_overrides() -> None:
    net = make_seq_net()
    curves = layer_error_curves(net, DATA, (2, 4, 8))
    assert set(curves) == {"0", "2", "6"}
    for c in curves.values():
        assert c[2] > c[4] > c[8] >= 0.0
    sizes = {n: int(net.get_submodule(n).weight.numel()) for n in curves}
    bits = allocate_bits(curves, sizes, 4.0)
    _, rep = quantize_weights(net, 4, recipe="beyond", calibration_data=DATA,
                              overrides={n: {"bits": b} for n, b in bits.items()})
    assert {layer.name: layer.bits for layer in rep.layers} == bits


def test_quantize_beyond_is_the_beyond_recipe() -> None:
    net = make_seq_net()
    q1, r1 = quantize_beyond(net, 3, DATA)
    q2, _ = quantize_weights(net, 3, recipe="beyond", calibration_data=DATA)
    for a, b in zip(q1.parameters(), q2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert r1.settings["rounding"] == "feedback"
    assert PRESETS["beyond"]["space"] == "uniform"
