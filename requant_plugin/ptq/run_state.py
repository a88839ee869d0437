"""The state one ``quantize_weights`` run shares between its layers, the bias-correction step
``delta_c = w_c . mu - wq_c . mu'`` and the per-layer report row."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.output_objective import output_mse
from ..options import BiasCorrection
from ..range import RangeEstimate
from .activation_sim import ActQParams, input_quantizers
from .bias_correction import expected_output, output_shift
from .calibration import LayerStatistics, input_row_sum
from .config import QuantizeConfig
from .output_search import OutputLayerReport
from .plan import LayerPlan
from .report import QuantizationReport
from .residual_correction import correct_residual_means_
from .stream import GraphStream

__all__ = ["RunState", "Solution", "bias_delta", "layer_report", "mean_square", "needs_float_copy", "rows_per_batch"]


def rows_per_batch(cfg: QuantizeConfig, model: nn.Module, names: list[str], batches: int) -> dict[str, int | None]:
    """Per layer, its Gram im2col rows per calibration batch: ``ceil(cfg.rows_budget(groups * n^2) / batches)``."""
    rows: dict[str, int | None] = {}
    for name in names:
        st = LayerStatistics.of_layer(name, model.get_submodule(name), with_gram=False)
        budget = cfg.rows_budget(st.groups * st.n**2)
        rows[name] = None if budget is None else -(-budget // batches)
    return rows


@dataclass(frozen=True)
class Solution:
    """One layer's quantized weight and how it was found (for the report)."""

    estimate: RangeEstimate
    weight: torch.Tensor
    p: float
    evaluations: int
    objective: str = "weight"
    gram: Any = None
    searched_mse: bool = True
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    bias_shift: float = 0.0
    target_damp: float | None = None


@dataclass
class RunState:
    """What every layer of one run reads: the config, the model being quantized, the report,
    the calibration batches and the statistics gathered before the first layer."""

    cfg: QuantizeConfig
    model: nn.Module
    report: QuantizationReport
    batches: list[torch.Tensor] | None = None
    rows_per_batch: dict[str, int | None] = field(default_factory=dict)  # per layer: im2col rows (None: all)
    float_stats: dict[str, LayerStatistics] = field(default_factory=dict)
    bn_means: dict[str, Any] = field(default_factory=dict)
    unhooked: set[str] = field(default_factory=set)
    unreached: set[str] = field(default_factory=set)  # not called by the eval forward: no input statistics
    float_model: nn.Module | None = None  # inputs="quantized": the float (BN-folded) model to match
    act_qparams: dict[str, ActQParams] = field(default_factory=dict)  # act_bits: per layer input
    stream: GraphStream | None = None  # inputs="quantized": both models' layer inputs in one pass
    shared_inputs: set[str] = field(default_factory=set)  # act_shortcuts: inputs the stream itself quantizes

    def _stream_or_warn(self, option: str, consequence: str, stacklevel: int) -> GraphStream | None:
        """The stream the opt-in ``option`` needs; ``None``, with a warning saying ``consequence``, where the layers
        do not stream (``stacklevel``: from this call, the caller of ``quantize_weights``)."""
        if self.stream is None:
            warnings.warn(f"{option}=True: the layers do not stream over the model's traced graph (it does not trace, "
                          f"calls a layer twice, or its activations do not fit in memory), so {consequence}",
                          stacklevel=stacklevel)
        return self.stream

    def simulate_shortcuts(self) -> None:
        """``act_shortcuts``: the stream quantizes each simulated layer input for all its readers (warns where
        the layers do not stream)."""
        if not (self.cfg.act_shortcuts and self.act_qparams):
            return
        stream = self._stream_or_warn("act_shortcuts", "the simulation quantizes each layer's own input only, not "
                                                       "the residual shortcuts", stacklevel=5)
        if stream is not None:
            self.shared_inputs = stream.share_input_quantization(input_quantizers(self.act_qparams))

    def correct_residuals(self) -> None:
        """``residual_correction``: each residual sum's mean error moved into its branch layer's bias, after every
        layer is quantized (:func:`~.residual_correction.correct_residual_means_`); the shifts go to the report."""
        if not (self.cfg.residual_correction and self.act_qparams):
            return
        stream = self._stream_or_warn("residual_correction", "no residual sum was corrected", stacklevel=4)
        if stream is not None:
            self.report.residual_shifts = correct_residual_means_(stream, self.act_qparams)

    def input_hooks(self) -> dict[str, ActQParams]:
        """The simulated layer inputs a forward pre-hook quantizes (those the stream does not already)."""
        return {n: qp for n, qp in self.act_qparams.items() if n not in self.shared_inputs}

    def fill_float_means(self, name: str, module: nn.Module, float_inputs: list[torch.Tensor]) -> None:
        """Sum the float input mean of ``name`` from the stream's float inputs (every batch) where the
        run left it to the stream (empty statistics): the values :func:`collect_statistics` would sum."""
        st = self.float_stats.get(name)
        if st is None or st.count:
            return
        for x in float_inputs:
            st.update_mean(*input_row_sum(module, x))
        st.check_finite()


def bias_delta(
    state: RunState, name: str, w_float: torch.Tensor, w_q: torch.Tensor, stats: LayerStatistics | None,
) -> Any:
    """The bias change of layer ``name`` (``None``: no input statistics): ``(W - Wq) mu`` with
    ``mu`` from BN statistics or the float model, or ``W mu_float - Wq mu_quant`` (sequential)."""
    bc = state.cfg.bias_correction
    if bc is BiasCorrection.BN:
        mu = state.bn_means.get(name)
        return None if mu is None else output_shift(w_float, w_q, mu)
    if name not in state.float_stats:
        return None
    mu_f = state.float_stats[name].mean
    if bc is BiasCorrection.PLAIN or stats is None:
        return output_shift(w_float, w_q, mu_f)
    return expected_output(w_float, mu_f) - expected_output(w_q, stats.mean)


def mean_square(w: torch.Tensor) -> float:
    """``mean(w**2)`` in float64, reduced in logical order (the same for any memory format)."""
    return float(w.detach().double().contiguous().pow(2).mean()) if w.numel() else 0.0


def needs_float_copy(sol: Solution) -> bool:
    """Whether :func:`layer_report` needs the float weight itself (not just its mean square): the
    weight MSE is measured (not the search's) or an output MSE is computed from a Gram matrix."""
    return not sol.searched_mse or sol.gram is not None


def layer_report(
    plan: LayerPlan, module: nn.Module, w: torch.Tensor, w_float: torch.Tensor | float, sol: Solution,
) -> OutputLayerReport:
    """The report row of one quantized weight ``w`` (float copy ``w_float``): alpha, the weight MSE
    ``mean (w - wq)^2`` (the search's own when it rounded to nearest) and the output MSE
    ``mean_c e_c^T G e_c`` relative to ``mean_c w_c^T G w_c`` when a Gram matrix is known.

    ``w_float`` may be the float weight's :func:`mean_square` instead where
    :func:`needs_float_copy` is false (no copy of the weight is then needed)."""
    est = sol.estimate
    if isinstance(w_float, torch.Tensor):
        mean_sq = mean_square(w_float)
    elif needs_float_copy(sol):
        raise ValueError("layer_report needs the float weight (not its mean square) for this solution")
    else:
        mean_sq = float(w_float)
    # the search's weight MSE (in its loss space) unless the weight was not rounded to nearest on it
    if sol.searched_mse:
        mse = float(est.mse.double().mean())
    else:
        assert isinstance(w_float, torch.Tensor)
        mse = float((w_float.double().contiguous() - w.detach().double().contiguous()).pow(2).mean())
    out_mse = rel_out = None
    if sol.gram is not None and plan.ch_axis == 0:
        assert isinstance(w_float, torch.Tensor)
        w2 = w_float.double().contiguous().reshape(w.shape[0], -1).cpu().numpy()
        e_out = output_mse(w2, w.detach().double().reshape(w.shape[0], -1).cpu().numpy(), sol.gram)
        ref = output_mse(w2, 0.0 * w2, sol.gram)
        out_mse = float(e_out.mean())
        rel_out = out_mse / float(ref.mean()) if float(ref.mean()) > 0 else 0.0
    return OutputLayerReport(
        name=plan.name, kind=type(module).__name__, shape=tuple(w.shape), bits=plan.bits,
        space=plan.space.value, alpha=float(est.alpha.double().mean()), mse=mse,
        rel_mse=mse / mean_sq if mean_sq > 0 else 0.0, evaluations=sol.evaluations, seconds=sol.seconds,
        note=", ".join(sol.notes), objective=sol.objective, output_mse=out_mse, rel_output_mse=rel_out,
        p=sol.p, bias_shift=sol.bias_shift, target_damp=sol.target_damp, estimate=est,
    )
