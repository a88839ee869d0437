"""Invalid observer options and the message fragment each must raise, for the FX and pt2e config
factories alike (every option is validated when the config is built, not when it is first used)."""

from __future__ import annotations

from typing import Any

__all__ = ["INVALID_OPTIONS"]

INVALID_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"weight_space": "log"}, "unknown space 'log'"),
    ({"p": 0.0}, "exponent p"),
    ({"weight_input_mean_ratio": -1.0}, "input_mean_ratio"),
    ({"bins": 1}, "bins must be at least"),
    ({"act_sample_size": 10}, "sample_size must be at least"),
    *(({"eps": eps}, r"eps \(the smallest scale\) must be") for eps in (-1.0, 0.0, float("nan"), float("inf"))),
]
