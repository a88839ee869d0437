"""REQuant range estimation on 2-D NumPy rows (one row per tensor or per channel).

For each row the transformed values ``y = T(w)`` fix the base range ``[lo, hi]`` (``alpha = 1``
is min-max); the search picks ``alpha`` minimising ``L(alpha)`` (see :mod:`.objective`); the
result is the scale ``alpha * s1`` and the zero point ``z`` of the grid in the transformed
space, with the transform needed to map codes back to ``w``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..options import Search
from .grid import Grid
from .objective import RangeObjective
from .search import SearchResult, golden_search, grid_search, minmax_search
from .transform import PowerTransform


@dataclass(frozen=True)
class RowEstimate:
    """Search result per row: ``alpha``, ``scale``, ``zero_point``, ``mse`` are ``(R,)``."""

    alpha: NDArray[np.float64]
    scale: NDArray[np.float64]
    zero_point: NDArray[np.int64]
    mse: NDArray[np.float64]
    evaluations: int
    transform: PowerTransform
    grid: Grid

    def levels(self) -> NDArray[np.float64]:
        """The ``(R, levels)`` codebook in the original space: ``T^-1(s * (k - z))``."""
        k = np.arange(self.grid.quant_min, self.grid.quant_max + 1, dtype=np.float64)
        y = self.scale[:, None] * (k[None, :] - self.zero_point[:, None])
        return self.transform.inverse(y)

    def clip_range(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The clipping range mapped back to the original space: ``T^-1`` of the grid ends."""
        lo, hi = self.grid.clip_range(self.scale, self.zero_point)
        return self.transform.inverse(lo[:, None])[:, 0], self.transform.inverse(hi[:, None])[:, 0]

    def fake_quantize(self, rows: NDArray[np.floating]) -> NDArray[np.float64]:
        """Reference fake quantization of 2-D rows in float64 (quantize in ``y``, map back)."""
        y = self.transform.forward(np.asarray(rows, dtype=np.float64))
        s, z = self.scale[:, None], self.zero_point[:, None]
        q = np.clip(np.rint(y / s) + z, self.grid.quant_min, self.grid.quant_max)
        return self.transform.inverse(s * (q - z))


def objective_for_rows(
    rows: NDArray[np.floating], grid: Grid, *, p: float = 1.0,
    loss_space: str = "original", presorted: bool = False,
) -> RangeObjective:
    """Build the objective for raw 2-D rows (sorted here unless ``presorted``)."""
    if rows.ndim != 2 or rows.shape[1] == 0:
        raise ValueError("rows must be 2-D with at least one column")
    srt = rows if presorted else np.sort(rows, axis=1)
    transform = PowerTransform.fit(np.stack([srt[:, 0], srt[:, -1]], axis=1), p)
    lo = transform.forward(srt[:, :1].astype(np.float64))[:, 0]
    hi = transform.forward(srt[:, -1:].astype(np.float64))[:, 0]
    return RangeObjective(srt, grid, transform, lo, hi, loss_space)


def run_search(
    obj: RangeObjective, search: str = "golden", grid_points: int = 2000, scan_rows: int | None = None,
) -> SearchResult:
    """Dispatch to the golden (default), dense grid or min-max (alpha = 1) search (``scan_rows``:
    see :func:`~.search.golden_search`)."""
    search = Search.parse(search)
    if search == Search.GRID:
        return grid_search(obj, grid_points)
    return minmax_search(obj) if search == Search.MINMAX else golden_search(obj, scan_rows=scan_rows)


#: rows are searched in contiguous blocks of about this many values: a block's sorted keys and
#: per-code arrays stay in cache, and a caller may map the blocks onto threads (NumPy releases the
#: GIL in its sorts, binary searches and ufuncs). The partition depends only on the shape, so the
#: result does not depend on how the blocks are run; each block scans as many points as the whole
#: rows would (``scan_rows``), so that it does not depend on the partition either (up to float rounding).
BLOCK_VALUES = 1 << 18


def row_blocks(rows: int, n: int) -> list[slice]:
    """Contiguous blocks of ``rows`` rows of ``n`` values, about :data:`BLOCK_VALUES` values each
    and at least two rows each (one block when everything fits in one), sizes differing by at most one."""
    count = max(1, min(rows // 2, -(-rows * n // BLOCK_VALUES)))
    return [slice(i * rows // count, (i + 1) * rows // count) for i in range(count)]


def estimate_rows(
    rows: NDArray[np.floating], grid: Grid, *, p: float = 1.0, loss_space: str = "original",
    search: str = "golden", grid_points: int = 2000,
    run_blocks: Callable[[Callable[[slice], RowEstimate], list[slice]], Iterable[RowEstimate]] = map,
) -> RowEstimate:
    """REQuant on each row of ``rows`` (finite values; shape ``(R, n)``, ``n >= 1``), searched in
    :func:`row_blocks`; ``run_blocks(fn, blocks)`` runs them (default ``map``, in order; an
    executor's ``map`` runs them on threads, with the same result)."""

    def one(block: slice) -> RowEstimate:
        obj = objective_for_rows(rows[block], grid, p=p, loss_space=loss_space)
        res = run_search(obj, search, grid_points, scan_rows=rows.shape[0])
        return RowEstimate(
            alpha=res.alpha, scale=np.maximum(res.alpha * obj.s1, 0.0), zero_point=obj.z, mse=res.mse,
            evaluations=res.evaluations, transform=obj.transform, grid=grid,
        )

    blocks = row_blocks(*rows.shape)
    if len(blocks) == 1:
        return one(blocks[0])
    parts = list(run_blocks(one, blocks))
    return RowEstimate(
        alpha=np.concatenate([e.alpha for e in parts]), scale=np.concatenate([e.scale for e in parts]),
        zero_point=np.concatenate([e.zero_point for e in parts]), mse=np.concatenate([e.mse for e in parts]),
        evaluations=max(e.evaluations for e in parts),
        transform=PowerTransform(parts[0].transform.p, np.concatenate([e.transform.m for e in parts])),
        grid=grid,
    )
