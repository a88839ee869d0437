"""Row blocks of a search on torch's intra-op threads: the core partitions, this runs the blocks.

:func:`~requant_plugin.core.row_blocks` fixes the partition from the rows' shape alone, so the
searches give the same result whatever the number of threads; NumPy releases the GIL in the
sorts, binary searches and ufuncs that make up a block's search.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from ..core import row_blocks

__all__ = ["map_blocks", "search_in_blocks"]

T = TypeVar("T")


def map_blocks(fn: Callable[[slice], T], blocks: list[slice]) -> list[T]:
    """``[fn(b) for b in blocks]``, run on up to ``torch.get_num_threads()`` threads."""
    threads = min(torch.get_num_threads(), len(blocks))
    if threads <= 1:
        return [fn(b) for b in blocks]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, blocks))


def search_in_blocks(fn: Callable[[slice], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """``fn`` (a per-row search of the rows ``rows[block]``, one result per row) over the
    :func:`~requant_plugin.core.row_blocks` of ``rows``, concatenated in row order."""
    return np.concatenate(map_blocks(fn, row_blocks(*rows.shape)))
