"""Input statistics of Conv/Linear layers on calibration data: im2col Gram matrix and mean.

A layer computes ``y = W x`` on its im2col rows ``x`` (Linear: the input features; Conv: the
``C_in/groups * prod(kernel)`` values under the kernel at one output position, zero padding
included, exactly what ``torch.nn.functional.unfold`` returns). Forward pre-hooks turn every
calibration batch into rows ``X`` (``(M, groups, n)``) and accumulate, per group,

    G = sum X^T X / N        (the Gram matrix: output MSE of a weight error e is e^T G e)
    mu = sum X / N           (the mean: expected output shift of e is e . mu)

in float64. The mean is exact over every row (im2col is linear, so the batch is summed before
unfolding); the Gram matrix uses at most ``max_rows`` random rows per batch (seeded, only the
drawn patches are gathered), an unbiased estimate. Supported: ``nn.Linear``, ``nn.Conv1d``
and ``nn.Conv2d`` (any stride, dilation, groups, padding mode or ``"same"``/``"valid"``);
other layers are reported by :func:`supports_output_statistics` as unsupported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inputs import iter_calibration_inputs
from .plan import layer_weight

__all__ = [
    "LayerStatistics", "accumulate_products", "attention_out_projections", "collect_statistics", "im2col_rows",
    "input_row_sum", "supports_output_statistics", "unreached_layers",
]


def supports_output_statistics(module: nn.Module) -> bool:
    """True for layers whose im2col rows this module can build (Linear, Conv1d, Conv2d)."""
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))


def attention_out_projections(model: nn.Module) -> set[str]:
    """Names of the ``out_proj`` Linear of every ``nn.MultiheadAttention`` in ``model``: the
    attention's forward reads ``out_proj.weight`` directly, so the Linear's own forward (and any
    hook on it) never runs and no input statistics can be collected for it."""
    out: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            out.add(f"{name}.out_proj" if name else "out_proj")
    return out


def _groups(module: nn.Module) -> int:
    return int(module.groups) if isinstance(module, (nn.Conv1d, nn.Conv2d)) else 1


def _pad_explicit(module: nn.Conv2d, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Apply the conv's padding to ``x`` when unfold cannot (strings, non-zero modes)."""
    pad = module.padding
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        return x, (0, 0)
    if isinstance(pad, str):
        if pad == "valid":
            return x, (0, 0)
        widths: list[int] = []
        for d, k in zip(reversed(module.dilation), reversed(module.kernel_size), strict=True):
            total = d * (k - 1)
            widths += [total // 2, total - total // 2]
        return F.pad(x, widths), (0, 0)
    return x, (int(pad[0]), int(pad[1]))


def _as_conv2d(module: nn.Module, x: Tensor) -> tuple[nn.Conv2d, Tensor, tuple[int, int]]:
    """A Conv2d view of a Conv1d/Conv2d, its input with any non-zero or string padding
    applied, and the symmetric zero padding ``(ph, pw)`` still to apply."""
    if isinstance(module, nn.Conv1d):
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            x, _ = _pad_explicit(module, x)  # type: ignore[arg-type]
            zpad = (0, 0)
        else:
            zpad = (0, int(module.padding[0]))
        conv = nn.Conv2d(module.in_channels, module.out_channels, (1, module.kernel_size[0]),
                         stride=(1, module.stride[0]), dilation=(1, module.dilation[0]),
                         groups=module.groups, bias=False, device="meta")
        return conv, x.unsqueeze(-2), zpad
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"no im2col rows for {type(module).__name__} (Linear, Conv1d, Conv2d only)")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    xp, zpad = _pad_explicit(module, x)
    return module, xp, zpad


def _out_size(conv: nn.Conv2d, xp: Tensor, zpad: tuple[int, int]) -> tuple[int, int]:
    sizes = []
    for i in range(2):
        span = conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        sizes.append((xp.shape[2 + i] + 2 * zpad[i] - span) // conv.stride[i] + 1)
    return sizes[0], sizes[1]


def im2col_rows(
    module: nn.Module, x: Tensor, max_rows: int | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """The layer's input rows ``(M, groups, n)`` for the input batch ``x``.

    ``n = in_features`` for Linear (``groups = 1``; leading dimensions become rows) and
    ``C_in / groups * kh * kw`` for convolutions, in the order of ``weight[c].flatten()``.
    With ``max_rows``, at most that many rows drawn uniformly without replacement (for
    convolutions only the drawn patches are gathered, never the full im2col matrix).
    """
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, 1, x.shape[-1])
        if max_rows is not None and rows.shape[0] > max_rows:
            idx = torch.randperm(rows.shape[0], generator=generator)[:max_rows].to(rows.device)
            rows = rows[idx]
        return rows
    conv, xp, zpad = _as_conv2d(module, x)
    b, c, h, w = xp.shape
    ho, wo = _out_size(conv, xp, zpad)
    g = conv.groups
    total = b * ho * wo
    if max_rows is None or total <= max_rows:
        cols = F.unfold(xp, conv.kernel_size, dilation=conv.dilation, padding=zpad, stride=conv.stride)
        nk, length = cols.shape[1], cols.shape[2]
        return cols.reshape(b, g, nk // g, length).permute(0, 3, 1, 2).reshape(b * length, g, nk // g)
    idx = torch.randperm(total, generator=generator)[:max_rows].to(xp.device)
    bi, pos = idx // (ho * wo), idx % (ho * wo)
    oy, ox = pos // wo, pos % wo
    kh, kw = conv.kernel_size
    ky = torch.arange(kh, device=xp.device).repeat_interleave(kw) * conv.dilation[0]
    kx = torch.arange(kw, device=xp.device).repeat(kh) * conv.dilation[1]
    iy = (oy * conv.stride[0] - zpad[0])[:, None] + ky[None, :]  # (M, T) in unpadded coordinates
    ix = (ox * conv.stride[1] - zpad[1])[:, None] + kx[None, :]
    inside = ((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)).to(xp.dtype)
    patches = xp[bi[:, None], :, iy.clamp(0, h - 1), ix.clamp(0, w - 1)] * inside[:, :, None]  # (M, T, C)
    rows = patches.permute(0, 2, 1).reshape(max_rows, c * kh * kw)
    return rows.reshape(max_rows, g, (c // g) * kh * kw)


def input_row_sum(module: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """Sum over ALL im2col rows of the batch, ``(groups, n)``, and the row count.

    im2col (and every padding mode) is linear in the input, so the batch is summed first (in the
    input's precision, at least float32) and unfolded once in float64.
    """
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        return rows.sum(dim=0, dtype=torch.float64)[None], int(rows.shape[0])
    if x.dim() == (3 if isinstance(module, nn.Conv1d) else 4):  # batched input
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32  # float32: 10x faster on CPU
        b, xs = x.shape[0], x.sum(dim=0, keepdim=True, dtype=wide).double()
    else:
        b, xs = 1, x.double().unsqueeze(0)
    conv, xp, zpad = _as_conv2d(module, xs)
    cols = F.unfold(xp, conv.kernel_size, dilation=conv.dilation, padding=zpad, stride=conv.stride)
    g = conv.groups
    return cols[0].sum(dim=1).reshape(g, -1), b * int(cols.shape[2])


def accumulate_products(acc: Tensor | None, a: Tensor, b: Tensor | None = None) -> Tensor:
    """``acc + a^T b`` per group for ``a`` ``(groups, M, n)`` and ``b`` ``(groups, M, k)`` (default ``a``),
    in float32 (``acc``, if given, is updated in place: one product, no float64 copies per batch)."""
    a32 = a.float()
    b32 = a32 if b is None else b.float()
    if acc is None:
        return torch.bmm(a32.transpose(1, 2), b32)
    return acc.baddbmm_(a32.transpose(1, 2), b32)


@dataclass
class LayerStatistics:
    """Accumulated input statistics of one layer, per group (the sums in float64, ``X^T X`` in float32;
    both read out in float64).

    The mean uses every im2col row (``count`` of them); the Gram matrix uses the sampled
    rows (``gram_count``).
    """

    name: str
    groups: int
    n: int
    count: int = 0
    gram_count: int = 0
    sum: Tensor | None = None  # (groups, n)
    sum_outer: Tensor | None = None  # (groups, n, n), None when only means are collected
    with_gram: bool = True

    @classmethod
    def of_layer(cls, name: str, module: nn.Module, *, with_gram: bool = True) -> LayerStatistics:
        """Empty statistics in the layout of ``module``'s im2col rows (its groups, ``weight[0].numel()``)."""
        return cls(name, _groups(module), int(layer_weight(module)[0].numel()), with_gram=with_gram)

    def update_mean(self, row_sum: Tensor, count: int) -> None:
        """Add the sum ``(groups, n)`` of ``count`` rows."""
        s = row_sum.detach().double()
        self.sum = s if self.sum is None else self.sum + s
        self.count += int(count)

    def update_gram(self, rows: Tensor) -> None:
        """Add sampled rows ``(M, groups, n)`` to ``X^T X`` (accumulated in float32 by the product itself)."""
        self.sum_outer = accumulate_products(self.sum_outer, rows.detach().permute(1, 0, 2))
        self.gram_count += int(rows.shape[0])

    def add_gram(self, sum_outer: Tensor, rows: int) -> None:
        """Add ``X^T X`` ``(groups, n, n)`` summed over ``rows`` sampled rows elsewhere."""
        self.sum_outer = sum_outer.clone() if self.sum_outer is None else self.sum_outer + sum_outer
        self.gram_count += int(rows)

    def update(self, rows: Tensor) -> None:
        """Add rows ``(M, groups, n)`` to both statistics."""
        self.update_mean(rows.detach().double().sum(dim=0), rows.shape[0])
        if self.with_gram:
            self.update_gram(rows)

    def merge(self, other: LayerStatistics) -> LayerStatistics:
        """Statistics of the union of both row sets (same layer)."""
        if (other.groups, other.n) != (self.groups, self.n):
            raise ValueError(f"{self.name}: cannot merge statistics of different layouts")
        out = LayerStatistics(self.name, self.groups, self.n, with_gram=self.with_gram and other.with_gram)
        for st in (self, other):
            if st.sum is not None:
                out.update_mean(st.sum, st.count)
            if out.with_gram and st.sum_outer is not None:
                so = st.sum_outer
                out.sum_outer = so.clone() if out.sum_outer is None else out.sum_outer + so
                out.gram_count += st.gram_count
        return out

    def _check(self) -> None:
        if self.count == 0 or self.sum is None:
            raise ValueError(
                f"layer {self.name!r} saw no calibration input: check that calibration_data reaches "
                "it in the model's forward pass"
            )

    def check_finite(self, *more: Tensor | None) -> None:
        """Raise (naming the layer) when no input was seen or the sums (and ``more``) hold NaN/Inf."""
        self._check()
        finite = [v for v in (self.sum, self.sum_outer, *more) if v is not None]
        if not all(bool(torch.isfinite(v).all()) for v in finite):
            raise ValueError(
                f"layer {self.name!r} received NaN/Inf inputs during calibration: REQuant needs finite "
                "values (check the calibration inputs or the model's numerics, e.g. float16 overflow)"
            )

    @property
    def mean(self) -> np.ndarray:
        """``(groups, n)`` mean input row."""
        self._check()
        assert self.sum is not None
        return (self.sum / self.count).cpu().numpy()

    @property
    def gram(self) -> np.ndarray:
        """``(groups, n, n)`` Gram matrix ``X^T X / N``."""
        self._check()
        if self.sum_outer is None or self.gram_count == 0:
            raise ValueError(f"layer {self.name!r}: statistics were collected without the Gram matrix")
        return (self.sum_outer.double() / self.gram_count).cpu().numpy()


class _Stop(Exception):
    """Raised by a hook to end a forward pass early once every wanted layer was seen."""


def collect_statistics(
    model: nn.Module,
    calibration_data: Any,
    layers: Sequence[str],
    *,
    with_gram: bool = True,
    max_rows: int | Mapping[str, int | None] | None = 1024,
    seed: int = 0,
    stop_early: bool = False,
    progress: bool = False,
) -> dict[str, LayerStatistics]:
    """Run ``calibration_data`` through ``model`` (eval mode, no grad) and return the input
    statistics of the named layers.

    Args:
        layers: module names (Linear/Conv1d/Conv2d).
        with_gram: also accumulate ``X^T X`` (otherwise only means; much cheaper).
        max_rows: per batch and layer, keep at most this many random im2col rows (``None``: all), or
            that number per layer name.
        seed: seeds the row subsampling.
        stop_early: end each forward pass once every named layer has seen its input
            (for sequential statistics of one layer at a time).
    """
    mods = dict(model.named_modules())
    stats: dict[str, LayerStatistics] = {}
    gen = torch.Generator().manual_seed(seed)
    handles = []
    wanted = set(layers)

    def make_hook(name: str, module: nn.Module) -> Any:
        rows = max_rows[name] if isinstance(max_rows, Mapping) else max_rows

        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            st = stats[name]
            st.update_mean(*input_row_sum(module, x))
            if with_gram:
                st.update_gram(im2col_rows(module, x, rows, gen))
            if stop_early:
                seen.add(name)
                if seen >= wanted:
                    raise _Stop
        return hook

    seen: set[str] = set()
    for name in layers:
        module = mods.get(name)
        if module is None or not supports_output_statistics(module):
            raise ValueError(f"layer {name!r} is not a Linear/Conv1d/Conv2d module of the model")
        stats[name] = LayerStatistics.of_layer(name, module, with_gram=with_gram)
        handles.append(module.register_forward_pre_hook(make_hook(name, module)))
    batches: Iterable[Tensor] = iter_calibration_inputs(calibration_data)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="calibration", unit="batch")
    try:
        with _eval_forward(model) as feed:
            for x in batches:
                seen.clear()
                feed(x)
    finally:
        for h in handles:
            h.remove()
    for st in stats.values():
        st.check_finite()
    return stats


def _contiguous_swap(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """Point every non-contiguous parameter/buffer of ``model`` at a contiguous copy (so the
    calibration passes compute exactly what the contiguous model computes, whatever kernels a
    memory format selects); returns ``(tensor, original data)`` pairs to put back afterwards.
    The user's tensors are never written: only ``.data`` is re-pointed, then restored."""
    swapped: list[tuple[Tensor, Tensor]] = []
    seen: set[int] = set()
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen or t.is_contiguous():
            continue
        seen.add(id(t))
        orig = t.data
        t.data = orig.clone(memory_format=torch.contiguous_format)
        swapped.append((t, orig))
    return swapped


def unreached_layers(model: nn.Module, x: Tensor, layers: Sequence[str]) -> set[str]:
    """The ``layers`` whose forward the eval-mode forward of ``x`` never calls (e.g. a training-only
    auxiliary head such as Inception's ``AuxLogits``): they get no input statistics."""
    mods = dict(model.named_modules())
    seen: set[str] = set()
    handles = [mods[n].register_forward_pre_hook(lambda *_, n=n: seen.add(n)) for n in layers if n in mods]
    try:
        with _eval_forward(model) as feed:
            feed(x)
    finally:
        for h in handles:
            h.remove()
    return set(layers) - seen


@contextlib.contextmanager
def _eval_forward(model: nn.Module) -> Iterator[Callable[[Tensor], None]]:
    """Yield ``feed(x)``: a no-grad eval forward of ``x`` (on the model's device and float dtype, contiguous
    parameters; a hook's :class:`_Stop` ends it); the model's mode and tensors are restored afterwards."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), None)

    def feed(x: Tensor) -> None:
        with contextlib.suppress(_Stop):
            model(x.to(device=device, dtype=dtype if x.is_floating_point() else None))

    was_training = model.training
    model.eval()
    swapped = _contiguous_swap(model)
    try:
        with torch.no_grad():
            yield feed
    finally:
        for t, orig in swapped:
            t.data = orig
        model.train(was_training)
