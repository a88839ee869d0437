"""The development-split benchmark: calibration never draws the dev images, and its scores are the
closed-form KL divergence and agreement."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import dev_split
from benchmarks.harness.cache import ResultCache


def test_calibration_draws_from_the_calibration_pool_only() -> None:
    x = torch.arange(50_000, dtype=torch.float32)[:, None]
    batches = dev_split.calibration(x, seed=5)
    drawn = torch.cat(batches)[:, 0]
    assert len(batches) == dev_split.IMAGES // dev_split.BATCH
    assert drawn.unique().numel() == dev_split.IMAGES and float(drawn.max()) < dev_split.CAL_POOL


def test_a_few_images_come_in_two_batches_under_their_own_cache_key() -> None:
    x = torch.arange(50_000, dtype=torch.float32)[:, None]
    batches = dev_split.calibration(x, seed=5, images=8)
    assert [len(b) for b in batches] == [4, 4]
    assert torch.equal(torch.cat(batches), torch.cat(dev_split.calibration(x, seed=5))[:8])  # the same draw, cut
    assert "images" not in dev_split.cache_key("m", 2, 0, "recipe", "d")
    assert dev_split.cache_key("m", 2, 0, "recipe", "d", images=8)["images"] == 8


def test_score_is_the_closed_form_kl_and_agreement() -> None:
    ref = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    got = dev_split.score(ref, out, torch.tensor([0, 0]))

    def kl(a: torch.Tensor, b: torch.Tensor) -> float:
        p, q = torch.softmax(a.double(), 0), torch.softmax(b.double(), 0)
        return float((p * (p / q).log()).sum())

    assert math.isclose(got["kl"], (kl(ref[0], out[0]) + kl(ref[1], out[1])) / 2, rel_tol=1e-12)
    assert got["agree"] == 50.0 and got["top1"] == 100.0
    same = dev_split.score(ref, ref, torch.tensor([0, 1]))
    assert abs(same["kl"]) < 1e-15 and same["agree"] == 100.0


def test_table_averages_seeds_and_relates_kl_to_the_first_variant(tmp_path) -> None:
    cache = ResultCache(tmp_path / "c.json")
    for seed, (a, b) in enumerate([(0.2, 0.1), (0.4, 0.3)]):
        for variant, kl in (("recipe", a), ("no-widen", b)):
            cache.put(dict(model="m", bits=2, seed=seed, variant=variant, code="d"),
                      {"kl": kl, "agree": 90.0, "top1": 80.0, "seconds": 1.0})
    text = dev_split.table(cache, "d", ["m"], [2], [0, 1], ["recipe", "no-widen"])
    rows = [line for line in text.splitlines() if line.startswith("| m ")]
    assert "0.30000" in rows[0] and "1.000" in rows[0]
    assert "0.20000" in rows[1] and "0.667" in rows[1] and "0.10000 / 0.30000" in rows[1]
    assert dev_split.VARIANTS["recipe"] == {}


def test_refine_variants_are_refine_configs_and_one_of_them_is_the_library_default() -> None:
    import dataclasses

    from requant_plugin.refine import RefineConfig

    for flow, table in (("pt2e", dev_split.PT2E_VARIANTS), ("fx", dev_split.FX_VARIANTS)):
        default = RefineConfig(flow=flow)
        for name, variant in table.items():
            graph_options = ("act_bits", "pooled_input", "residual_bits", "act_ranges", "weights", "mapping", "refine",
                             "equalize_acts")
            if variant.get("refine") is False:
                continue  # no refinement at all
            cfg = RefineConfig(flow=flow, **{k: v for k, v in variant.items() if k not in graph_options})
            same = all(getattr(cfg, f.name) == getattr(default, f.name) for f in dataclasses.fields(cfg)
                       if f.name != "layer_factors") and cfg.factors == default.factors
            # the name says which are the defaults (FX: per-observer factors since section dev-fx-layers)
            defaults = ("-layers",) if flow == "fx" else ("-half-tol02", "pooled", "res8", "observed", "rows", "refit",
                                                          "damp", "shortcuts", "resmean", "acle")
            if flow == "pt2e" and name.endswith("-layers"):  # the opt-in per-observer stage at pt2e
                assert not same, name
                continue
            assert same == any(d in name for d in defaults), name


def test_images_outside_the_calibration_pool_are_refused_before_any_work(capsys) -> None:
    for bad in ("0", str(dev_split.CAL_POOL + 1)):
        with pytest.raises(SystemExit) as exc:
            dev_split.main(["--images", bad, "--no-write"])
        assert exc.value.code == 2
        assert f"--images must be within 1..{dev_split.CAL_POOL}, got {bad}" in capsys.readouterr().err


def test_flip_variant_calibrates_on_the_same_images_and_their_mirror_images(monkeypatch: pytest.MonkeyPatch) -> None:
    import requant_plugin.ptq as ptq

    seen: list[torch.Tensor] = []

    def fake_quantize(model: torch.nn.Module, recipe: str, bits: int, calibration_data: list[torch.Tensor],
                      **options: object) -> tuple[torch.nn.Module, None]:
        assert recipe == "beyond" and "hflip" not in options
        seen.extend(calibration_data)
        return model, None

    monkeypatch.setattr(ptq, "quantize_weights", fake_quantize)
    x = torch.randn(dev_split.CAL_POOL + 10, 1, 2, 3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
    x_dev = torch.randn(4, 1, 2, 3)
    dev = (x_dev, torch.zeros(4, dtype=torch.long), dev_split.logits(model, x_dev))
    dev_split.run_one(model, x, 2, 3, "flip", dev, images=8)
    plain = dev_split.calibration(x, 3, images=8)
    assert len(seen) == 2 * len(plain)
    assert all(torch.equal(a, b) for a, b in zip(seen[:len(plain)], plain, strict=True))
    assert all(torch.equal(a, b.flip(-1)) for a, b in zip(seen[len(plain):], plain, strict=True))
