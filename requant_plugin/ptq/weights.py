"""``quantize_weights``: weights-only REQuant PTQ of every Conv/Linear layer of a model.

Two objectives choose each layer's range factor ``alpha``: the paper's data-free weight MSE
(``objective="weight"``, default) or the layer-output MSE on calibration data
(``objective="output"``, :mod:`.output_search`), optionally followed by bias correction
(:mod:`.bias_correction`). Settings: :class:`~.config.QuantizeConfig`; named recipes of the best
measured combinations: :mod:`.recipes`; what each layer gets: :mod:`.plan`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from typing import Any

import torch
from torch import nn

from ..core.damped import DampedFactor
from ..options import BiasCorrection, Inputs, Objective, Rounding, Space, granularity
from ..range import RangeEstimate, RangeSpec, estimate_range
from .activation_sim import ActQParams, activation_qparams, fake_quant_activations
from .bias_correction import add_to_bias_, bn_input_means, write_guard
from .bn_fold import fold_bn_
from .calibration import (
    LayerStatistics,
    attention_out_projections,
    collect_statistics,
    supports_output_statistics,
    unreached_layers,
)
from .config import QuantizeConfig
from .inputs import calibration_inputs
from .output_search import OutputLayerReport, OutputSearchConfig, configured_feedback_round, search_layer_output
from .paired import PairedStatistics, collect_paired_statistics, paired_statistics
from .plan import (
    LayerPlan,
    attention_weights,
    check_model,
    layer_weight,
    plan_attention,
    plan_layers,
    quantizable_layers,
)
from .recipes import make_config
from .reparam import bake_computed_weights
from .report import QuantizationReport
from .run_state import RunState, Solution, bias_delta, layer_report, mean_square, needs_float_copy, rows_per_batch
from .stream import GraphStream
from .tied import resolve_tied_weights

__all__ = ["WIDEN_MIN_ROWS_PER_INPUT", "quantize_beyond", "quantize_weights"]

#: The feedback rounding tries the wider grids of ``feedback_widen`` only on a layer whose Gram matrix has at
#: least this many calibration rows per input feature; with fewer, the candidate of lowest ``e^T G e`` fits the
#: calibration rows rather than the layer's inputs (measured: random-weight MobileNetV3/ShuffleNet on 8 images).
WIDEN_MIN_ROWS_PER_INPUT = 4

#: One layer's float and quantized inputs, per calibration batch (from a :class:`GraphStream`).
LayerInputs = tuple[list[torch.Tensor], list[torch.Tensor]] | None


def quantize_weights(
    model: nn.Module,
    config: QuantizeConfig | str | int | None = None,
    calibration_data: Any = None,
    *,
    inplace: bool = False,
    progress: bool = False,
    **options: Any,
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

    With ``space="uniform"`` the result is uniform (per-channel asymmetric with integer
    zero points when ``per_channel=True``): each layer's grid is in
    ``report[name].estimate`` (a :class:`RangeEstimate`) for the observers and export.

    Args:
        model: the float model; deep-copied first unless ``inplace=True``.
        config: a :class:`~.config.QuantizeConfig`, a recipe name from
            :data:`~.recipes.RECIPES` (e.g. ``"beyond"``), or the bit width (``quantize_weights(m, 4)``);
            ``None``: the defaults (4 bits, the paper's sqrt grid, per tensor, weight MSE).
        calibration_data: a Tensor, or an iterable of input Tensors or ``(x, y, ...)`` batches
            (e.g. a DataLoader); a few hundred images are enough.
        inplace: quantize ``model`` itself.
        progress: show a tqdm bar over layers.
        **options: :class:`~.config.QuantizeConfig` fields (``bits``, ``space``, ``symmetric``,
            ``granularity`` or the legacy ``per_channel``, ``fold_bn``, ``search``, ``p``,
            ``loss_space``, ``convention``, ``transform_first_last``, ``objective``,
            ``bias_correction``, ``rounding``, ``inputs``, ``act_bits``, ``act_shortcuts``, ``residual_correction``,
            ``end_bits``, ``target_damp``, ``calibration_rows``, ``seed``, ``input_shape``, ``overrides``), or
            ``recipe=`` (a recipe name): written options
            always win over the recipe, except one it cannot honour (ValueError naming both).

    Returns:
        The quantized model and a :class:`QuantizationReport` whose layers are
        :class:`~requant_plugin.ptq.output_search.OutputLayerReport` (output MSE per layer
        when calibration data were given).

    Raises:
        ValueError: NaN/Inf weights (naming the layer), bad bits/space/search/objective,
            unknown override layers or keys, a model with no quantizable layer, or a data
            mode (``objective="output"``, plain/sequential bias correction, quantized inputs) without
            ``calibration_data``.
    """
    cfg = make_config(config, **options)
    _check_data(cfg, calibration_data)
    check_model(model, cfg)
    batches = None if calibration_data is None else calibration_inputs(
        calibration_data, model, min_batches=2 if cfg.cross_validates else 1)
    out = model if inplace else copy.deepcopy(model)
    layers = quantizable_layers(out)
    bake_computed_weights([(n, m) for n, m in layers if not _skipped(cfg, n)])  # else the write-back is lost
    plans = list(zip(plan_layers(cfg, layers), (m for _, m in layers), strict=True))
    state = _prepare(out, cfg, batches, [plan for plan, _ in plans])
    plans, tied = resolve_tied_weights(out, plans)  # after folding: a folded layer owns its weight
    state.report.skipped.update(tied)
    for plan in plan_attention(cfg, out):
        _quantize_attention_weight(state, plan)
    from tqdm.auto import tqdm  # a dependency; imported on first use only

    with (tqdm(total=len(plans), desc=f"REQuant W{cfg.bits}", unit="layer", disable=not progress) as bar,
          fake_quant_activations(out, state.input_hooks())):  # act_bits: the layers see quantized activations
        stream = state.stream
        streamed = stream.layers if stream is not None else {}
        for plan, module in plans:  # the streamed layers are quantized as the stream reaches them
            if plan.name not in streamed:
                _quantize_layer(state, plan, module)
                bar.update(1)
        if stream is not None:
            _quantize_streamed(state, stream, plans, bar)
    state.correct_residuals()  # residual_correction: after every layer, without the input hooks above
    return out, state.report


def _quantize_streamed(state: RunState, stream: GraphStream, plans: list[tuple[LayerPlan, nn.Module]],
                       bar: Any) -> None:
    """Quantize the streamed layers as ``stream`` reaches them; their report rows in registration order."""
    by_name = {plan.name: (plan, module) for plan, module in plans}
    done = len(state.report.layers)

    def visit(name: str, xf: list[torch.Tensor], xq: list[torch.Tensor]) -> None:
        _quantize_layer(state, *by_name[name], inputs=(xf, xq))
        bar.update(1)

    stream.run(visit)
    order = {plan.name: i for i, (plan, _) in enumerate(plans)}
    state.report.layers[done:] = sorted(state.report.layers[done:], key=lambda r: order[r.name])


def quantize_beyond(model: Any, bits: int = 4, calibration_data: Any = None, **options: Any) -> Any:
    """``quantize_weights(model, bits, recipe="beyond", calibration_data=...)``; returns
    ``(model, report)``. Extra keywords go to :func:`quantize_weights` (a ``recipe=`` replaces ``"beyond"``)."""
    options.setdefault("recipe", "beyond")
    return quantize_weights(model, bits, calibration_data, **options)


def _check_data(cfg: QuantizeConfig, calibration_data: Any) -> None:
    what = cfg.needs_data
    if what is not None and calibration_data is None:
        raise ValueError(
            f"{what} needs calibration_data (a Tensor or an iterable of input batches, e.g. "
            "ArrayDataset.calibration_batches(512)); use bias_correction='bn' for a data-free "
            "correction, or objective='weight' without data"
        )
    if cfg.bias_correction is BiasCorrection.BN and cfg.input_shape is None and calibration_data is None:
        raise ValueError(
            "bias_correction='bn' needs the shape of one input sample: pass input_shape=(C, H, W) "
            "for images, (C, L) for sequences, (features,) for a Linear model (no data is used), "
            "or bias_correction='none'"
        )


def _prepare(out: nn.Module, cfg: QuantizeConfig, batches: list[torch.Tensor] | None,
             plans: list[LayerPlan]) -> RunState:
    """The run's shared state: BN means (before folding), folded BNs, float input statistics
    (``plans``: the layers' plans, for their simulated input widths)."""
    state = RunState(cfg, out, QuantizationReport(settings=cfg.settings()), batches)
    state.unhooked = attention_out_projections(out)  # MultiheadAttention never calls out_proj's forward
    data_layers = [n for n, m in quantizable_layers(out) if not _skipped(cfg, n)
                   and supports_output_statistics(m) and n not in state.unhooked]
    if data_layers and (batches is not None or cfg.input_shape is not None):
        sample = batches[0][:1] if batches is not None else torch.zeros((1, *(cfg.input_shape or ())))
        state.unreached = unreached_layers(out, sample, data_layers)
        if state.unreached:
            warnings.warn(f"quantize_weights: {sorted(state.unreached)} are not called by the model's eval-mode "
                          "forward (e.g. a training-only auxiliary head), so no calibration input reaches them: "
                          "they are quantized by the weight objective, without bias correction", stacklevel=3)
            data_layers = [n for n in data_layers if n not in state.unreached]
    if batches is not None:
        state.rows_per_batch = rows_per_batch(cfg, out, data_layers, len(batches))
    if cfg.bias_correction is BiasCorrection.BN and data_layers:  # from the BatchNorms, so before folding
        shape = cfg.input_shape
        if shape is None:  # _check_data: without input_shape there are batches
            assert batches is not None
            shape = tuple(batches[0].shape[1:])
        state.bn_means = bn_input_means(out, shape, data_layers, seed=cfg.seed)
    if cfg.fold_bn:
        state.report.folded_bn = fold_bn_(out)
    if batches is not None and data_layers:  # also for the report's output MSE
        # quantized inputs + output objective search the paired statistics: float Grams unread (means only)
        with_gram = cfg.inputs is not Inputs.QUANTIZED or cfg.objective is not Objective.OUTPUT
        if cfg.inputs is Inputs.QUANTIZED:  # the float reference the partly quantized model is matched to
            state.float_model = copy.deepcopy(out)
            state.stream = GraphStream.build(state.float_model, out, data_layers, batches)
        if state.stream is not None and not with_gram:  # the stream's float inputs give the means
            state.float_stats = {n: LayerStatistics.of_layer(n, out.get_submodule(n), with_gram=False)
                                 for n in data_layers}  # means only, filled by RunState.fill_float_means
        else:
            state.float_stats = collect_statistics(out, batches, data_layers, with_gram=with_gram,
                                                   max_rows=state.rows_per_batch, seed=cfg.seed)
        if state.float_model is not None and cfg.act_bits is not None:  # a W/A deployment's ranges, from float inputs
            state.act_qparams = _activation_ranges(out, plans, data_layers, batches)
            state.report.act_bits = {n: qp.bits for n, qp in state.act_qparams.items()}
            state.report.act_qparams = dict(state.act_qparams)
            state.simulate_shortcuts()
    return state


def _activation_ranges(out: nn.Module, plans: list[LayerPlan], names: list[str],
                       batches: list[torch.Tensor]) -> dict[str, ActQParams]:
    """The simulated input quantization of each layer of ``names`` at its plan's ``act_bits``."""
    bits = {plan.name: plan.act_bits for plan in plans if plan.act_bits}
    ranges: dict[str, ActQParams] = {}
    for b in sorted(set(bits.values())):
        ranges.update(activation_qparams(out, [n for n in names if bits.get(n) == b], batches, b))
    return ranges


def _skipped(cfg: QuantizeConfig, name: str) -> bool:
    return cfg.override(name).skip


def _weight_estimate(w: torch.Tensor, plan: LayerPlan, cfg: QuantizeConfig) -> RangeEstimate:
    """The weight-MSE estimate of ``plan`` (the best over the candidate exponents ``p``)."""
    best: RangeEstimate | None = None
    for pv in [1.0] if plan.space is Space.UNIFORM else [plan.p] if isinstance(plan.p, float) else plan.p:
        spec = RangeSpec(
            bits=plan.bits, symmetric=plan.symmetric, granularity=granularity(plan.per_channel, plan.ch_axis),
            space=Space.UNIFORM if pv == 1.0 else plan.space, search=cfg.search, p=pv,
            loss_space=cfg.loss_space, convention=cfg.convention,
        )
        est = estimate_range(w.detach(), spec, name=plan.name)
        if best is None or float(est.mse.double().mean()) < float(best.mse.double().mean()):
            best = est
    assert best is not None
    return best


def _search_config(cfg: QuantizeConfig, plan: LayerPlan, stats: LayerStatistics | None) -> OutputSearchConfig:
    """The layer's output search and feedback rounding (the output search's damping and order): ``cfg``'s wider
    grids only where ``stats`` has >= WIDEN_MIN_ROWS_PER_INPUT Gram rows per input; widening and the refit only
    with the feedback rounding (a recipe's values stay unused when the user picks ``rounding="nearest"``)."""
    feedback = cfg.rounding is Rounding.FEEDBACK
    enough = stats is not None and stats.gram_count >= WIDEN_MIN_ROWS_PER_INPUT * stats.n
    return OutputSearchConfig(
        symmetric=plan.symmetric, granularity=granularity(plan.per_channel),
        p=1.0 if plan.space is Space.UNIFORM else plan.p, convention=cfg.convention, search=cfg.search,
        rounding=cfg.rounding, feedback_widen=cfg.feedback_widen if enough and feedback else (1.0,),
        feedback_sweeps=cfg.feedback_sweeps, feedback_refit=cfg.feedback_refit and feedback)


def _solve(state: RunState, plan: LayerPlan, w: torch.Tensor, stats: LayerStatistics | None,
           paired: PairedStatistics | None = None) -> Solution:
    """Search the range of one layer by the output objective where it can, else by the weight MSE
    (with ``paired``, of the weight ``W*`` that matches the float output from the quantized inputs)."""
    cfg = state.cfg
    wanted = paired is not None or cfg.objective is Objective.OUTPUT or cfg.rounding is Rounding.FEEDBACK
    use = stats is not None and stats.with_gram and plan.ch_axis == 0 and wanted
    gram, rows = (stats.gram, stats.gram_count) if use and stats is not None else (None, None)  # read out once
    sc = _search_config(cfg, plan, stats)
    factors, damp = None, None  # one factorisation of the damped Gram matrix for the target and the rounding
    if paired is not None and gram is not None:
        damp = paired.choose_damp(w, cfg.target_damp).damp
        if cfg.rounding is Rounding.FEEDBACK and sc.feedback_damp == damp:
            factors = [DampedFactor.of(g, damp, sc.feedback_order) for g in gram]
        w = paired.target(w, factors, gram=gram, damp=damp)
    if cfg.objective is Objective.OUTPUT and gram is not None:
        sol = search_layer_output(w, gram, plan.bits, sc, factors=factors, gram_rows=rows)
        return Solution(sol.estimate, sol.weight, sol.p, sol.estimate.evaluations, "output", gram,
                        searched_mse=False, target_damp=damp)
    est = _weight_estimate(w, plan, cfg)
    new_w = est.fake_quantize(w.detach())
    float_stats = state.float_stats.get(plan.name)
    report_gram = float_stats.gram if float_stats is not None and float_stats.with_gram else None
    if cfg.rounding is Rounding.FEEDBACK and gram is not None:
        (new_w, est, _), report_gram = configured_feedback_round(w, gram, est, sc, factors), gram
    return Solution(est, new_w, est.p, est.evaluations, "weight", report_gram,
                    searched_mse=cfg.rounding is Rounding.NEAREST, target_damp=damp)


def _layer_statistics(state: RunState, name: str,
                      inputs: LayerInputs = None) -> tuple[LayerStatistics | None, PairedStatistics | None]:
    """The input statistics the layer is quantized with (sequential or quantized inputs: of the partly
    quantized model) and, for quantized inputs, the paired statistics with the float model (else ``None``);
    ``inputs``: the layer's float and quantized inputs per batch where a :class:`GraphStream` already has them."""
    stats = state.float_stats.get(name)
    cfg = state.cfg
    if inputs is not None:
        module = state.model.get_submodule(name)
        state.fill_float_means(name, module, inputs[0])
        paired = paired_statistics(module, name, zip(*inputs, strict=True), max_rows=state.rows_per_batch[name],
                                   seed=cfg.seed, weight=layer_weight(module), folds=cfg.cross_validates)
        return paired.stats, paired
    if cfg.inputs is Inputs.QUANTIZED and stats is not None and state.float_model is not None:
        paired = collect_paired_statistics(state.float_model, state.model, state.batches or [], name,
                                           max_rows=state.rows_per_batch[name], seed=cfg.seed,
                                           weight=layer_weight(state.model.get_submodule(name)),
                                           folds=cfg.cross_validates)
        return paired.stats, paired
    if cfg.bias_correction is BiasCorrection.SEQUENTIAL and stats is not None:
        with_gram = cfg.objective is Objective.OUTPUT or cfg.rounding is Rounding.FEEDBACK
        stats = collect_statistics(state.model, state.batches or [], [name], with_gram=with_gram,
                                   max_rows=state.rows_per_batch[name], seed=cfg.seed, stop_early=True)[name]
    return stats, None


def _quantize_layer(state: RunState, plan: LayerPlan, module: nn.Module, inputs: LayerInputs = None) -> None:
    """Quantize one Conv/Linear weight in place, correct its bias, and report it."""
    cfg, name = state.cfg, plan.name
    if plan.skip:
        state.report.skipped.setdefault(name, "skipped by override")
        return
    stats, paired = _layer_statistics(state, name, inputs)
    notes = ["first/last: no transform"] if plan.end else []
    w = layer_weight(module)
    t0 = time.perf_counter()
    sol = _solve(state, plan, w, stats, paired)  # reads w, never writes it
    secs = time.perf_counter() - t0
    # the float weight is copied only where something reads it after the write-back
    copy = cfg.bias_correction is not BiasCorrection.NONE or needs_float_copy(sol)
    w_float: torch.Tensor | float = w.detach().clone() if copy else mean_square(w)
    if name in state.unreached:
        notes.append("weight objective (not called by the eval forward, no calibration input)")
    elif cfg.objective is Objective.OUTPUT and sol.objective != "output":
        notes.append("MultiheadAttention.out_proj: weight objective (the attention reads its weight "
                     "directly, no calibration input)" if name in state.unhooked
                     else f"{type(module).__name__}: weight objective (no im2col statistics)")
    with write_guard(w):
        w.copy_(sol.weight)
    shift = 0.0
    if isinstance(w_float, torch.Tensor) and cfg.bias_correction is not BiasCorrection.NONE:
        delta = bias_delta(state, name, w_float, w, stats)
        if delta is None:
            notes.append("no bias correction (no input statistics)")
        else:
            add_to_bias_(module, delta)
            shift = float(abs(delta).mean())
    sol = dataclasses.replace(sol, notes=tuple(notes), seconds=secs, bias_shift=shift)
    state.report.layers.append(layer_report(plan, module, w, w_float, sol))


def _quantize_attention_weight(state: RunState, plan: LayerPlan) -> None:
    """Fake-quantize one q/k/v projection weight of a MultiheadAttention in place, by the weight
    objective (no hookable input: the attention computes ``x W^T`` itself)."""
    if plan.skip:
        state.report.skipped[plan.name] = "skipped by override"
        return
    module, attr = next((m, a) for n, m, a in attention_weights(state.model) if n == plan.name)
    w = getattr(module, attr)
    w_float = mean_square(w)  # the report's only use of the float weight (searched MSE, no Gram)
    t0 = time.perf_counter()
    est = _weight_estimate(w, plan, state.cfg)
    new_w = est.fake_quantize(w.detach())
    secs = time.perf_counter() - t0
    with write_guard(w):
        w.copy_(new_w)
    notes = ["MultiheadAttention q/k/v projection: weight objective" if state.cfg.objective is Objective.OUTPUT
             else "MultiheadAttention q/k/v projection"]
    if state.cfg.bias_correction is not BiasCorrection.NONE:
        notes.append("no bias correction (no input statistics)")
    sol = Solution(est, new_w, est.p, est.evaluations, notes=tuple(notes), seconds=secs)
    layer: OutputLayerReport = layer_report(plan, module, w, w_float, sol)
    # no module owns this weight, so no observer/export layer can take its grid: no estimate
    state.report.layers.append(dataclasses.replace(layer, estimate=None))
