"""Row blocks on torch's threads (``requant_plugin.range.threads``): the order of the results,
and searches whose result does not depend on the thread count."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import requant_plugin.core.estimate as core_estimate
from requant_plugin import estimate_range
from requant_plugin.core import row_blocks
from requant_plugin.observers import PerChannelREQuantObserver
from requant_plugin.range.threads import map_blocks, search_in_blocks


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_estimate, "BLOCK_VALUES", 4000)


@pytest.fixture
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _weight(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(48, 1, 1, 1, generator=g) * 2 + 0.01
    return torch.randn(48, 16, 3, 3, generator=g) * scale


def test_map_blocks_keeps_the_block_order_and_uses_the_threads(threads: None) -> None:
    blocks = row_blocks(40, 100_000)
    assert len(blocks) == 16
    seen: set[int] = set()

    def fn(b: slice) -> int:
        seen.add(threading.get_ident())
        return b.start

    torch.set_num_threads(1)
    assert map_blocks(fn, blocks) == [b.start for b in blocks] and seen == {threading.get_ident()}
    torch.set_num_threads(4)
    seen.clear()
    assert map_blocks(fn, blocks) == [b.start for b in blocks]
    assert threading.get_ident() not in seen  # ran on the pool's threads


def test_search_in_blocks_concatenates_in_row_order(small_blocks: None) -> None:
    rows = np.arange(300 * 50, dtype=np.float64).reshape(300, 50)
    out = search_in_blocks(lambda b: rows[b, 0], rows)
    np.testing.assert_array_equal(out, rows[:, 0])


@pytest.mark.parametrize("bits", [4, 8])
def test_estimate_range_is_the_same_on_one_thread_and_four(bits: int, small_blocks: None, threads: None) -> None:
    w = _weight(bits)
    assert len(row_blocks(48, 144)) > 1
    torch.set_num_threads(1)
    one = estimate_range(w, bits, per_channel=True, space="sqrt")
    torch.set_num_threads(4)
    four = estimate_range(w, bits, per_channel=True, space="sqrt")
    assert torch.equal(one.alpha, four.alpha) and torch.equal(one.scale, four.scale)


def test_coherent_weight_observer_is_the_same_on_one_thread_and_four(small_blocks: None, threads: None) -> None:
    w = _weight(0)
    alphas = []
    for n in (1, 4):
        torch.set_num_threads(n)
        obs = PerChannelREQuantObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, input_mean_ratio=0.47)
        obs(w)
        alphas.append(obs.alpha.clone())
    assert torch.equal(alphas[0], alphas[1])
    assert not torch.all(alphas[0] == 1.0)  # the search moved the ranges
