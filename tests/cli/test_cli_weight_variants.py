"""``requant quantize --weights`` on state dicts saved from every weight-tensor variant (plain,
channels_last, inference, frozen): identical tables to the plain model, weights file untouched."""

from __future__ import annotations

from pathlib import Path

import torch
from refs.variants import make_variant

_PLAIN: dict[str, str] = {}


def _quantize(cli, weights: Path) -> str:
    args = ("quantize", "--model", "small-cnn", "--weights", str(weights), "--data", "digits",
            "--bits", "4", "--test-limit", "200", "--calib-images", "64", "--no-progress")
    before = weights.read_bytes()
    status, out, err = cli(*args)
    assert status == 0, err
    assert weights.read_bytes() == before
    return out.replace(str(weights), "<weights>")


def test_quantize_reads_every_weight_variant_like_the_plain_model(cli, digits_model, weight_variant, tmp_path):
    _, model = digits_model
    if not _PLAIN:
        torch.save(model.state_dict(), tmp_path / "plain.pt")
        _PLAIN["out"] = _quantize(cli, tmp_path / "plain.pt")
    variant = make_variant(model, weight_variant)
    path = tmp_path / f"{weight_variant}.pt"
    torch.save(variant.state_dict(), path)
    assert _quantize(cli, path) == _PLAIN["out"]
