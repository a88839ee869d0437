"""``quantize_weights``: weights-only REQuant PTQ of every Conv/Linear layer of a model.

Two objectives choose each layer's range factor ``alpha``: the paper's data-free weight MSE
(``objective="weight"``, default) or the layer-output MSE on calibration data
(``objective="output"``, :mod:`.output_search`), optionally followed by bias correction
(:mod:`.bias_correction`). Presets of the best measured combinations: :mod:`.presets`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core import check_bits, check_space
from ..core.search import check_search
from ..range import RangeEstimate, estimate_range
from .bias_correction import (
    add_to_bias_,
    bn_input_means,
    check_bias_correction,
    expected_output,
    output_shift,
    write_guard,
)
from .bn_fold import fold_bn_
from .calibration import (
    LayerStatistics,
    attention_out_projections,
    check_calibration_batches,
    collect_statistics,
    iter_calibration_inputs,
    supports_output_statistics,
)
from .output_search import ROUNDINGS, LayerSolution, OutputLayerReport, feedback_round, search_layer_output
from .presets import UNSET, apply_recipe
from .report import QuantizationReport

QUANTIZABLE: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.Linear,
)
OVERRIDE_KEYS = frozenset({"bits", "space", "skip", "per_channel", "symmetric", "p"})
OBJECTIVES: tuple[str, ...] = ("weight", "output")


def weight_ch_axis(module: nn.Module) -> int:
    """Output-channel axis of a layer's weight: 1 for ConvTranspose, 0 otherwise."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv/ConvTranspose/Linear layer, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def attention_weights(model: nn.Module) -> list[tuple[str, nn.MultiheadAttention, str]]:
    """``(parameter name, module, attribute)`` of the q/k/v projection weights of every
    ``nn.MultiheadAttention`` (the packed ``in_proj_weight`` ``[3E, E]``, or ``q/k/v_proj_weight``
    when ``kdim``/``vdim`` differ): Linear-like weights (output channels on axis 0) that are not
    a submodule's ``weight``. ``out_proj`` is an ``nn.Linear`` and found by :func:`quantizable_layers`."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            attrs = (["in_proj_weight"] if m.in_proj_weight is not None
                     else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
            out += [(f"{name}.{a}" if name else a, m, a) for a in attrs]
    return out


def _check_overrides(overrides: Mapping[str, Mapping[str, Any]], names: list[str]) -> None:
    for name, ov in overrides.items():
        if name not in names:
            raise ValueError(
                f"overrides names an unknown layer {name!r}; quantizable layers are: {names}"
            )
        bad = set(ov) - OVERRIDE_KEYS
        if bad:
            raise ValueError(
                f"overrides[{name!r}] has unknown keys {sorted(bad)}; valid: {sorted(OVERRIDE_KEYS)}"
            )


def quantize_weights(
    model: nn.Module,
    bits: int = 4,
    *,
    space: str = UNSET,
    symmetric: bool = UNSET,
    per_channel: bool = UNSET,
    fold_bn: bool = UNSET,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    inplace: bool = False,
    search: str = UNSET,
    p: float | Sequence[float] = UNSET,
    loss_space: str = "original",
    convention: str = UNSET,
    transform_first_last: bool = UNSET,
    progress: bool = False,
    objective: str = UNSET,
    calibration_data: Any = None,
    bias_correction: bool | str | None = UNSET,
    rounding: str = UNSET,
    calibration_rows: int | None = 8192,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
    recipe: str | None = None,
) -> tuple[nn.Module, QuantizationReport]:
    """Weights-only PTQ: replace each layer's weight by ``T^-1(Q_alpha(T(w)))``.

    For every Conv/ConvTranspose/Linear layer REQuant picks ``alpha`` minimising the weight
    MSE (see :func:`requant_plugin.estimate_range`) and writes the fake-quantized weight back
    (biases and BN parameters stay float). As in the paper, the first and last layers are
    excluded from the transform (plain uniform alpha search) unless
    ``transform_first_last=True``.

    Beyond the paper (calibration data, no gradient steps):

    * ``objective="output"``: ``alpha`` minimises the layer-OUTPUT MSE
      ``mean_c (w_c - q(w_c))^T G (w_c - q(w_c))`` with ``G = X^T X / N`` the Gram matrix of
      the layer's im2col inputs on ``calibration_data`` (exact; same grid, transform and
      convexity-aware search). Linear/Conv1d/Conv2d layers; others fall back to the weight
      objective (noted in the report).
    * ``bias_correction``: add the expected output shift ``(W - Wq) E[x]`` to each layer's
      bias (creating one if needed): ``"plain"`` (or ``True``; float statistics),
      ``"sequential"`` (statistics of the partially quantized model, matching the float
      model's mean output), ``"bn"`` (data-free, from BatchNorm statistics).
    * ``p`` may be a sequence: the transform exponent is searched per layer (output
      objective: by output MSE; weight objective: by weight MSE).
    * ``rounding="feedback"``: after the range search, the codes are chosen column by column
      with error feedback in the Gram metric (optimal-brain-quantization update) on the same
      grid, so the ranges stay uniform per channel for ``space="uniform"`` (needs data).
    * ``recipe``: a named preset from :data:`requant_plugin.ptq.presets.PRESETS` (e.g.
      ``"beyond"``); it fills every recipe keyword the caller did not write (a written one wins,
      even at its default value; one the recipe cannot honour raises ValueError).

    With ``space="uniform"`` the result is uniform (per-channel asymmetric with integer
    zero points when ``per_channel=True``): each layer's grid is in
    ``report[name].estimate`` (a :class:`RangeEstimate`) for the observers and export.

    The recipe keywords (``space``, ``symmetric``, ``per_channel``, ``fold_bn``, ``search``, ``p``,
    ``objective``, ``bias_correction``, ``rounding``, ``transform_first_last``, ``convention``)
    default to :data:`requant_plugin.ptq.presets.DEFAULTS` (``"sqrt"``, False, False, False,
    ``"golden"``, 0.5, ``"weight"``, False, ``"nearest"``, False, ``"torch"``) unless a recipe
    sets them.

    Args:
        model: the float model; deep-copied first unless ``inplace=True``.
        bits: 2..8.
        space: ``"sqrt"`` (REQuant with the transform) or ``"uniform"`` (alpha only).
        symmetric, per_channel, p, loss_space, convention, search: as in ``estimate_range``.
        fold_bn: fold BatchNorm into the preceding layer first (the returned model then has
            ``nn.Identity`` in place of each folded BN).
        overrides: per layer name, any of ``bits``, ``space``, ``skip``, ``per_channel``,
            ``symmetric``, ``p``.
        progress: show a tqdm bar over layers.
        objective: ``"weight"`` (the paper, data-free) or ``"output"`` (needs calibration data).
        calibration_data: a Tensor, or an iterable of input Tensors or ``(x, y, ...)`` batches
            (e.g. a DataLoader); a few hundred images are enough.
        bias_correction: ``False``, ``True``/``"plain"``, ``"sequential"`` or ``"bn"``.
        rounding: ``"nearest"`` or ``"feedback"``.
        calibration_rows: im2col rows per layer for the Gram matrices (a random subsample spread
            evenly over the batches; ``None``: all rows). The means always use every row.
        seed: seeds the row subsampling (and the synthetic samples of ``"bn"``).
        input_shape: shape of one input sample (e.g. ``(3, 32, 32)``) for
            ``bias_correction="bn"`` without calibration data (with data, the first batch's
            shape is used; the data themselves are not).
        recipe: preset name (see above).

    Returns:
        The quantized model and a :class:`QuantizationReport` whose layers are
        :class:`~requant_plugin.ptq.output_search.OutputLayerReport` (output MSE per layer
        when calibration data were given).

    Raises:
        ValueError: NaN/Inf weights (naming the layer), bad bits/space/search/objective,
            unknown override layers or keys, a model with no quantizable layer, or a data
            mode (``objective="output"``, plain/sequential bias correction) without
            ``calibration_data``.
    """
    kw = apply_recipe(recipe, dict(
        space=space, symmetric=symmetric, per_channel=per_channel, fold_bn=fold_bn,
        search=search, p=p, objective=objective, bias_correction=bias_correction,
        rounding=rounding, transform_first_last=transform_first_last, convention=convention,
    ))
    space, symmetric, per_channel = kw["space"], kw["symmetric"], kw["per_channel"]
    fold_bn, search, p, objective = kw["fold_bn"], kw["search"], kw["p"], kw["objective"]
    bias_correction, rounding = kw["bias_correction"], kw["rounding"]
    transform_first_last, convention = kw["transform_first_last"], kw["convention"]
    check_bits(bits)
    check_space(space)
    check_search(search)
    bc = check_bias_correction(bias_correction)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: valid values are {list(OBJECTIVES)}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}: valid values are {list(ROUNDINGS)}")
    needs_data = objective == "output" or bc in ("plain", "sequential") or rounding == "feedback"
    if needs_data and calibration_data is None:
        what = ("objective='output'" if objective == "output" else "rounding='feedback'"
                if rounding == "feedback" else f"bias_correction={bc!r}")
        raise ValueError(
            f"{what} needs calibration_data (a Tensor or an iterable of input batches, e.g. "
            "ArrayDataset.calibration_batches(512)); use bias_correction='bn' for a data-free "
            "correction, or objective='weight' without data"
        )
    if bc == "bn" and input_shape is None and calibration_data is None:
        raise ValueError(
            "bias_correction='bn' needs the input shape of one sample: pass input_shape=(C, H, W) "
            "(no data is used)"
        )
    overrides = dict(overrides or {})
    names = [n for n, _ in quantizable_layers(model)] + [n for n, _, _ in attention_weights(model)]
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no Conv/ConvTranspose/Linear layer to quantize"
        )
    _check_overrides(overrides, names)
    weights = [(n, _weight(m)) for n, m in quantizable_layers(model)]
    for name, weight in weights + [(n, getattr(m, a)) for n, m, a in attention_weights(model)]:
        if not torch.isfinite(weight.detach()).all():
            raise ValueError(
                f"layer {name!r} has NaN/Inf weights; fix the checkpoint or skip the layer with "
                f"overrides={{{name!r}: {{'skip': True}}}}"
            )
    batches = None
    if calibration_data is not None:
        batches = list(iter_calibration_inputs(calibration_data))
        if not batches:
            raise ValueError("calibration_data yielded no batch")
        check_calibration_batches(batches)
    rows_per_batch = None
    if batches is not None and calibration_rows is not None:
        if calibration_rows < 1:
            raise ValueError(f"calibration_rows must be positive or None, got {calibration_rows}")
        rows_per_batch = -(-int(calibration_rows) // len(batches))
    out = model if inplace else copy.deepcopy(model)
    report = QuantizationReport(settings=dict(
        bits=bits, space=space, symmetric=symmetric, per_channel=per_channel, fold_bn=fold_bn,
        search=search, p=p, loss_space=loss_space, objective=objective, bias_correction=bc,
        rounding=rounding, calibration_rows=calibration_rows, seed=seed, recipe=recipe,
    ))
    layers = quantizable_layers(out)
    active = [n for n, _ in layers if not overrides.get(n, {}).get("skip", False)]
    unhooked = attention_out_projections(out)  # MultiheadAttention never calls out_proj's forward
    data_layers = [n for n, m in layers if n in active and supports_output_statistics(m) and n not in unhooked]
    bn_means: dict[str, Any] = {}
    if bc == "bn" and data_layers:  # from the BatchNorms, so before folding them
        shape = tuple(input_shape) if input_shape is not None else tuple(batches[0].shape[1:])  # type: ignore[index]
        bn_means = bn_input_means(out, shape, data_layers, seed=seed)
    if fold_bn:
        report.folded_bn = fold_bn_(out)
        layers = quantizable_layers(out)
    first, last = layers[0][0], layers[-1][0]
    float_stats: dict[str, LayerStatistics] = {}
    if batches is not None and data_layers:  # also for the report's output MSE
        float_stats = collect_statistics(out, batches, data_layers, max_rows=rows_per_batch, seed=seed)
    _quantize_attention_(out, report, overrides, bits, space, symmetric, per_channel, p, loss_space,
                         convention, search, objective, bc)
    iterator: Any = layers
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(layers, desc=f"REQuant W{bits}", unit="layer")
    for name, module in iterator:
        ov = overrides.get(name, {})
        if ov.get("skip", False):
            report.skipped[name] = "skipped by override"
            continue
        lbits = check_bits(int(ov.get("bits", bits)))
        lspace = str(ov.get("space", space))
        check_space(lspace)
        if name in (first, last) and not transform_first_last and "space" not in ov:
            lspace = "uniform"
        lsym = bool(ov.get("symmetric", symmetric))
        lpc = bool(ov.get("per_channel", per_channel))
        lp = ov.get("p", p)
        stats = float_stats.get(name)
        if bc == "sequential" and stats is not None:
            stats = collect_statistics(out, batches, [name], with_gram=objective == "output" or rounding == "feedback",
                                       max_rows=rows_per_batch, seed=seed, stop_early=True)[name]
        notes = ["first/last: no transform"] if name in (first, last) else []
        w = _weight(module)
        w_float = w.detach().clone()
        t0 = time.perf_counter()
        use_output = objective == "output" and stats is not None and weight_ch_axis(module) == 0
        if objective == "output" and not use_output:
            notes.append("MultiheadAttention.out_proj: weight objective (the attention reads its weight "
                         "directly, no calibration input)" if name in unhooked
                         else f"{type(module).__name__}: weight objective (no im2col statistics)")
        gram = float_stats[name].gram if name in float_stats else None
        if use_output:
            assert stats is not None
            sol = _output_solution(w, stats.gram, lbits, lspace, lsym, lpc, lp, convention, search,
                                   rounding)
            est, new_w, lp_used, evals = sol.estimate, sol.weight, sol.p, sol.estimate.evaluations
            gram = stats.gram
        else:
            est, lp_used = _weight_estimate(w, weight_ch_axis(module), name, lbits, lspace, lsym, lpc, lp,
                                            loss_space, convention, search)
            new_w, evals = est.fake_quantize(w), est.evaluations
            if rounding == "feedback" and stats is not None and weight_ch_axis(module) == 0:
                new_w = feedback_round(w, stats.gram, est)
                gram = stats.gram
        secs = time.perf_counter() - t0
        with write_guard(w):
            w.copy_(new_w)
        shift = 0.0
        if bc is not None:
            delta = _bias_delta(bc, name, w_float, w, float_stats, stats, bn_means)
            if delta is None:
                notes.append("no bias correction (no input statistics)")
            else:
                add_to_bias_(module, delta)
                shift = float(abs(delta).mean())
        report.layers.append(_layer_report(
            name, module, w, w_float, est, lbits, lspace, evals, secs, ", ".join(notes),
            "output" if use_output else "weight", gram, lp_used, shift,
            searched_mse=not use_output and rounding == "nearest",
        ))
    return out, report


def _weight(module: nn.Module) -> torch.Tensor:
    w = module.weight
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor")
    return w


def _p_values(p: float | Sequence[float]) -> list[float]:
    return [float(p)] if isinstance(p, (int, float)) else [float(v) for v in p]


def _output_solution(
    w: torch.Tensor, gram: Any, bits: int, space: str, symmetric: bool, per_channel: bool,
    p: float | Sequence[float], convention: str, search: str, rounding: str,
) -> LayerSolution:
    pv: float | Sequence[float] = 1.0 if space == "uniform" else _p_values(p)
    return search_layer_output(
        w, gram, bits, symmetric=symmetric, per_channel=per_channel, p=pv, convention=convention,
        search=search, rounding=rounding,
    )


def _weight_estimate(
    w: torch.Tensor, ch_axis: int, name: str, bits: int, space: str, symmetric: bool, per_channel: bool,
    p: float | Sequence[float], loss_space: str, convention: str, search: str,
) -> tuple[RangeEstimate, float]:
    best: RangeEstimate | None = None
    for pv in ([1.0] if space == "uniform" else _p_values(p)):
        lspace = "uniform" if pv == 1.0 else space
        est = estimate_range(
            w.detach(), bits, symmetric=symmetric, per_channel=per_channel,
            ch_axis=ch_axis, space=lspace,  # type: ignore[arg-type]
            search=search,  # type: ignore[arg-type]
            p=pv, loss_space=loss_space,  # type: ignore[arg-type]
            convention=convention,  # type: ignore[arg-type]
            name=name,
        )
        if best is None or float(est.mse.double().mean()) < float(best.mse.double().mean()):
            best = est
    assert best is not None
    return best, best.p


def _quantize_attention_(
    out: nn.Module, report: QuantizationReport, overrides: Mapping[str, Mapping[str, Any]], bits: int,
    space: str, symmetric: bool, per_channel: bool, p: float | Sequence[float], loss_space: str,
    convention: str, search: str, objective: str, bc: str | None,
) -> None:
    """Fake-quantize the q/k/v projection weights of every MultiheadAttention in place, by the
    weight objective (no hookable input: the attention computes ``x W^T`` itself)."""
    for name, module, attr in attention_weights(out):
        ov = overrides.get(name, {})
        if ov.get("skip", False):
            report.skipped[name] = "skipped by override"
            continue
        lbits = check_bits(int(ov.get("bits", bits)))
        lspace = str(ov.get("space", space))
        check_space(lspace)
        w = getattr(module, attr)
        w_float = w.detach().clone()
        t0 = time.perf_counter()
        est, lp_used = _weight_estimate(w, 0, name, lbits, lspace, bool(ov.get("symmetric", symmetric)),
                                        bool(ov.get("per_channel", per_channel)), ov.get("p", p),
                                        loss_space, convention, search)
        new_w = est.fake_quantize(w)
        secs = time.perf_counter() - t0
        with write_guard(w):
            w.copy_(new_w)
        notes = ["MultiheadAttention q/k/v projection: weight objective" if objective == "output"
                 else "MultiheadAttention q/k/v projection"]
        if bc is not None:
            notes.append("no bias correction (no input statistics)")
        layer = _layer_report(name, module, w, w_float, est, lbits, lspace, est.evaluations, secs,
                              ", ".join(notes), "weight", None, lp_used, 0.0, searched_mse=True)
        # no module owns this weight, so no observer/export layer can take its grid: no estimate
        report.layers.append(dataclasses.replace(layer, estimate=None))


def _bias_delta(
    bc: str, name: str, w_float: torch.Tensor, w_q: torch.Tensor,
    float_stats: Mapping[str, LayerStatistics], stats: LayerStatistics | None,
    bn_means: Mapping[str, Any],
) -> Any:
    if bc == "bn":
        mu = bn_means.get(name)
        return None if mu is None else output_shift(w_float, w_q, mu)
    if name not in float_stats:
        return None
    mu_f = float_stats[name].mean
    if bc == "plain" or stats is None:
        return output_shift(w_float, w_q, mu_f)
    return expected_output(w_float, mu_f) - expected_output(w_q, stats.mean)


def _layer_report(
    name: str, module: nn.Module, w: torch.Tensor, w_float: torch.Tensor, est: RangeEstimate,
    bits: int, space: str, evals: int, secs: float, note: str, objective: str, gram: Any,
    p: float, shift: float, *, searched_mse: bool,
) -> OutputLayerReport:
    wf = w_float.double().contiguous()  # reductions in logical order: same for any memory format
    err = wf - w.detach().double().contiguous()
    mean_sq = float(wf.pow(2).mean()) if w.numel() else 0.0
    # the search's weight MSE (in its loss space) unless the weight was not rounded to nearest on it
    mse = float(est.mse.double().mean()) if searched_mse else float(err.pow(2).mean())
    out_mse = rel_out = None
    if gram is not None and weight_ch_axis(module) == 0:
        from ..core.output_objective import output_mse

        w2 = wf.reshape(w.shape[0], -1).cpu().numpy()
        e_out = output_mse(w2, w.detach().double().reshape(w.shape[0], -1).cpu().numpy(), gram)
        ref = output_mse(w2, 0.0 * w2, gram)
        out_mse = float(e_out.mean())
        rel_out = out_mse / float(ref.mean()) if float(ref.mean()) > 0 else 0.0
    return OutputLayerReport(
        name=name, kind=type(module).__name__, shape=tuple(w.shape), bits=bits, space=space,
        alpha=float(est.alpha.double().mean()), mse=mse,
        rel_mse=mse / mean_sq if mean_sq > 0 else 0.0, evaluations=evals, seconds=secs, note=note,
        objective=objective, output_mse=out_mse, rel_output_mse=rel_out, p=p, bias_shift=shift,
        estimate=est,
    )
