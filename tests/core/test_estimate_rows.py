"""``estimate_rows`` searched in row blocks: the partition, and the same result for any thread
count and as one block over all rows."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import requant_plugin.core.estimate as core_estimate
from requant_plugin.core import Grid, PowerTransform, estimate_rows, row_blocks


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 5000), n=st.integers(1, 70000))
def test_row_blocks_cover_the_rows_in_order_with_two_or_more_rows_each(rows: int, n: int) -> None:
    blocks = row_blocks(rows, n)
    assert blocks[0].start == 0 and blocks[-1].stop == rows
    assert all(a.stop == b.start for a, b in itertools.pairwise(blocks))
    sizes = [b.stop - b.start for b in blocks]
    assert max(sizes) - min(sizes) <= 1
    if len(blocks) == 1:
        assert rows * n <= core_estimate.BLOCK_VALUES or rows < 4
    else:
        assert min(sizes) >= 2
        # about BLOCK_VALUES values per block: never more blocks than needed to stay under it
        assert len(blocks) == min(rows // 2, -(-rows * n // core_estimate.BLOCK_VALUES))


def _rows(seed: int, rows: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_t(4, size=(rows, n)) * rng.uniform(0.01, 2.0, size=(rows, 1))


@pytest.mark.parametrize(("bits", "p"), [(4, 0.5), (3, 1.0), (8, 0.5)])
def test_blocks_give_the_same_result_for_any_thread_count_and_as_one_block(
    bits: int, p: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(bits, 90, 300)
    grid = Grid.from_bits(bits)
    monkeypatch.setattr(core_estimate, "BLOCK_VALUES", 2000)  # 14 blocks of 6-7 rows
    assert len(row_blocks(*rows.shape)) == 14
    one_thread = estimate_rows(rows, grid, p=p)
    with ThreadPoolExecutor(3) as pool:
        threads = estimate_rows(rows, grid, p=p, run_blocks=pool.map)
    for field in ("alpha", "scale", "zero_point", "mse"):
        np.testing.assert_array_equal(getattr(one_thread, field), getattr(threads, field))
    monkeypatch.setattr(core_estimate, "BLOCK_VALUES", 1 << 40)
    whole = estimate_rows(rows, grid, p=p)
    np.testing.assert_array_equal(threads.zero_point, whole.zero_point)
    np.testing.assert_array_equal(threads.transform.m, PowerTransform.fit(rows, p).m)
    assert threads.transform.p == whole.transform.p
    # each row's search is its own (a block scans the points all rows would): only the float
    # rounding of sums across rows may differ (the piece minima's running sums span the block's rows)
    np.testing.assert_allclose(threads.mse, whole.mse, rtol=1e-10, atol=0)
    np.testing.assert_allclose(threads.fake_quantize(rows), whole.fake_quantize(rows), rtol=0, atol=1e-9)
