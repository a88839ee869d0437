"""benchmarks.mixed_precision: every variant keeps the budget, and the table compares them to uniform."""

from __future__ import annotations

import pytest
import torch
from refs.nets import make_seq_net

from benchmarks.dev_split import CAL_POOL, logits
from benchmarks.harness.cache import ResultCache
from benchmarks.mixed_precision import run_seed, table


@pytest.fixture(scope="module")
def results() -> dict[str, dict[float, dict]]:
    torch.manual_seed(0)
    x_train = torch.randn(CAL_POOL, 3, 6, 6)
    net = make_seq_net()
    x_dev = torch.randn(64, 3, 6, 6)
    dev = (x_dev, torch.randint(0, 4, (64,)), logits(net, x_dev))
    return {v: run_seed(net, x_train, 0, [3.0, 3.5], v, dev) for v in ("uniform", "layer", "network")}


def test_every_variant_keeps_its_budget(results: dict[str, dict[float, dict]]) -> None:
    assert set(results["uniform"]) == {3.0}  # no uniform width of 3.5 bits
    assert results["uniform"][3.0]["histogram"] == {"3": -1}
    for v in ("layer", "network"):
        assert set(results[v]) == {3.0, 3.5}
        for budget, r in results[v].items():
            hist = r["histogram"]
            assert sum(hist.values()) == 3 and r["kl"] >= 0.0 and 0.0 <= r["agree"] <= 100.0  # make_seq_net: 3 layers
            assert min(int(b) for b in hist) >= 2 and r["seconds"] > 0
            assert 2.0 <= r["mean_bits"] <= budget


def test_table_gives_kl_relative_to_uniform(tmp_path, results: dict[str, dict[float, dict]]) -> None:
    cache = ResultCache(tmp_path / "cache.json")
    for v, per_budget in results.items():
        for budget, r in per_budget.items():
            cache.put(dict(model="net", budget=budget, seed=0, variant=v, code="d"), r)
    text = table(cache, "d", ["net"], [3.0, 3.5], [0])
    rows = [line for line in text.splitlines() if line.startswith("| net")]
    assert [r.split("|")[3].strip() for r in rows] == ["uniform", "layer", "network", "layer", "network"]
    assert rows[0].split("|")[7].strip() == "1.000" and "all" in rows[0]
    ratio = results["network"][3.0]["kl"] / results["uniform"][3.0]["kl"]
    assert rows[2].split("|")[7].strip() == f"{ratio:.3f}"
