"""One layer's input statistics in the partly quantized model, paired row by row with the float
model's (for ``inputs="quantized"``): the Gram matrix and mean of ``x_q`` and ``E[x_q x_f^T]``, and, for the
cross-validated target damp, the same over the even and the odd batches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn

from ..core.damped import DampedFactor
from ..core.ridge_cv import DampChoice, TargetFold, cross_validated_damp
from ..core.target import TARGET_DAMP, compensated_weight
from .calibration import LayerStatistics, _eval_forward, _Stop, accumulate_products, im2col_rows, input_row_sum

__all__ = ["PairedStatistics", "collect_paired_statistics", "first_input", "paired_statistics"]


@dataclass(frozen=True)
class PairedStatistics:
    """``stats``: the quantized model's input statistics of the layer; over the same sampled rows as
    ``stats.gram``, either ``cross``: ``(groups, n, n)`` ``E[x_q x_f^T]``, or ``cross_out``:
    ``(groups, n, C/groups)`` ``E[x_q y_f^T]`` with the float layer's outputs ``y_f = W x_f`` (the other
    one is ``None``); ``folds``: the same statistics over the even and over the odd batches (``None``: not
    accumulated, or fewer than two batches)."""

    stats: LayerStatistics
    cross: np.ndarray | None = None
    cross_out: np.ndarray | None = None
    folds: tuple[TargetFold, TargetFold] | None = None

    def compensated(self, weight2d: np.ndarray, factors: Sequence[DampedFactor] | None = None, *,
                    gram: np.ndarray | None = None, damp: float = TARGET_DAMP) -> np.ndarray:
        """``W*`` of :func:`~requant_plugin.core.target.compensated_weight` for the ``(C, n)`` weight (with
        ``cross_out``: the weight it was accumulated with) and ``damp``; ``factors``: the groups' damped factors
        of ``stats.gram`` made with ``damp``, if the caller has them; ``gram``: ``stats.gram`` where the caller has
        read it out already."""
        g = self.stats.gram if gram is None else gram
        return compensated_weight(weight2d, g, self.cross, damp, cross_out=self.cross_out, factors=factors)

    def target(self, weight: Tensor, factors: Sequence[DampedFactor] | None = None, *,
               gram: np.ndarray | None = None, damp: float = TARGET_DAMP) -> Tensor:
        """:meth:`compensated` for a ``(C, ...)`` weight tensor, in its shape, dtype and device."""
        w2d = weight.detach().double().contiguous().reshape(weight.shape[0], -1).cpu().numpy()
        return torch.from_numpy(self.compensated(w2d, factors, gram=gram, damp=damp)).reshape(weight.shape).to(weight)

    def choose_damp(self, weight: Tensor, damp: float | tuple[float, ...]) -> DampChoice:
        """``damp`` itself, or of its candidates the one :func:`~requant_plugin.core.ridge_cv.cross_validated_damp`
        picks on :attr:`folds` (without folds: the first candidate)."""
        if isinstance(damp, float) or self.folds is None:
            first = damp if isinstance(damp, float) else damp[0]
            return DampChoice(first, (first,), (0.0,))
        w2d = weight.detach().double().contiguous().reshape(weight.shape[0], -1).cpu().numpy()
        return cross_validated_damp(w2d, self.folds, damp)


def first_input(module: nn.Module, call: Callable[[], object]) -> Tensor:
    """The first input ``module`` receives while ``call()`` runs, after its forward pre-hooks (e.g. the
    ``act_bits`` fake quantization); the run stops there, so neither the module nor anything after it runs."""
    got: list[Tensor] = []

    def hook(_m: nn.Module, args: tuple[object, ...]) -> None:
        x_in = args[0]
        assert isinstance(x_in, Tensor)
        got.append(x_in.detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        with contextlib.suppress(_Stop):
            call()
    finally:
        handle.remove()
    if not got:
        raise ValueError(f"layer {type(module).__name__} saw no calibration input in the model's forward pass")
    return got[0]


def paired_statistics(
    module: nn.Module, name: str, pairs: Iterable[tuple[Tensor, Tensor]], *,
    max_rows: int | None = 1024, seed: int = 0, weight: Tensor | None = None, folds: bool = False,
) -> PairedStatistics:
    """Accumulate, over the ``(x_f, x_q)`` input pairs of layer ``module`` (one per batch, in batch
    order), ``X_q^T X_q`` and the cross term on the same random im2col rows of both inputs (seeded by
    ``seed`` and the batch index); the mean of ``x_q`` uses every row.

    The cross term is ``X_q^T X_f`` (``n x n`` per group), or with ``weight`` (the layer's float weight,
    ``(C, ...)``) ``X_q^T (X_f W^T)`` (``n x C/groups``) where that costs less (``2 C/groups < n``).
    ``folds``: the even and the odd batches' sums apart (the totals are their sums) for
    :attr:`PairedStatistics.folds`.
    """
    st = LayerStatistics.of_layer(name, module)
    w = None if weight is None else weight.detach().float().reshape(st.groups, -1, st.n)  # (groups, C/g, n)
    project = w is not None and 2 * w.shape[1] < st.n
    parts = [_Part(), _Part()] if folds else [_Part()]  # the even and the odd batches' sums, or one for all
    for i, (xf, xq) in enumerate(pairs):
        if xf.shape != xq.shape:
            raise ValueError(f"layer {name!r}: float and quantized inputs differ in shape ({tuple(xf.shape)} "
                             f"vs {tuple(xq.shape)})")
        rows_q = im2col_rows(module, xq, max_rows, torch.Generator().manual_seed(seed * 1_000_003 + i))
        rows_f = im2col_rows(module, xf.to(xq.device), max_rows, torch.Generator().manual_seed(seed * 1_000_003 + i))
        st.update_mean(*input_row_sum(module, xq))
        rq, rf = rows_q.detach().float().permute(1, 0, 2), rows_f.detach().float().permute(1, 0, 2)
        if project:
            assert w is not None
            rf = torch.bmm(rf, w.to(rf.device).transpose(1, 2))  # (groups, M, C/g): the float outputs
        parts[i % len(parts)].add(rq, rf)
    live = [pt for pt in parts if pt.rows]
    cross = None
    for pt in live:  # the totals: the sums of the parts (one product per row and term, folds or not)
        assert pt.gram is not None and pt.cross is not None
        st.add_gram(pt.gram, pt.rows)
        cross = pt.cross.clone() if cross is None else cross + pt.cross
    st.check_finite(cross)
    assert cross is not None
    mean = (cross.double() / st.gram_count).cpu().numpy()
    pair = (live[0].fold(project), live[1].fold(project)) if len(live) == 2 else None
    return PairedStatistics(st, None, mean, pair) if project else PairedStatistics(st, mean, None, pair)


@dataclass
class _Part:
    """The sums ``X_q^T X_q`` and ``X_q^T X_f`` (or ``X_q^T Y_f``) of some of the batches, per group, and, while
    they are fewer than the inputs, their rows (a rank-deficient fold's fits solve in the row space)."""

    gram: Tensor | None = None
    cross: Tensor | None = None
    rows: int = 0
    kept: list[tuple[Tensor, Tensor]] | None = None

    def add(self, rq: Tensor, rf: Tensor) -> None:
        self.gram = accumulate_products(self.gram, rq)
        self.cross = accumulate_products(self.cross, rq, rf)
        self.rows += int(rq.shape[1])
        self.kept = [*(self.kept or []), (rq, rf)] if self.rows < rq.shape[2] else None

    def fold(self, project: bool) -> TargetFold:
        """The mean statistics, with the cross term as ``cross_out`` where ``project``."""
        assert self.gram is not None and self.cross is not None
        g_mean = (self.gram.double().cpu() / self.rows).numpy()
        c_mean = (self.cross.double().cpu() / self.rows).numpy()
        row_q = row_f = None
        if self.kept:
            row_q = torch.cat([q for q, _ in self.kept], dim=1).double().cpu().numpy()
            row_f = torch.cat([f for _, f in self.kept], dim=1).double().cpu().numpy()
        if project:
            return TargetFold(g_mean, None, c_mean, self.rows, row_q, row_f)
        return TargetFold(g_mean, c_mean, None, self.rows, row_q, row_f)


def collect_paired_statistics(
    float_model: nn.Module, model: nn.Module, batches: Sequence[Tensor], name: str, *,
    max_rows: int | None = 1024, seed: int = 0, weight: Tensor | None = None, folds: bool = False,
) -> PairedStatistics:
    """Feed every batch to both models up to layer ``name`` (one forward pass per model and batch)
    and accumulate :func:`paired_statistics` of its inputs."""
    fmod, qmod = dict(float_model.named_modules()).get(name), dict(model.named_modules()).get(name)
    if fmod is None or qmod is None:
        raise ValueError(f"layer {name!r} is not in both the float and the quantized model")
    with _eval_forward(float_model) as feed_f, _eval_forward(model) as feed_q:
        pairs = ((first_input(fmod, partial(feed_f, x)), first_input(qmod, partial(feed_q, x))) for x in batches)
        return paired_statistics(qmod, name, pairs, max_rows=max_rows, seed=seed, weight=weight, folds=folds)
