"""Per-layer work of the export: the named layers checked against the graph, then REQuant for
every constant weight of the Q/DQ plan with that layer's settings (or its given grid).

A layer's settings come from :meth:`.config.ExportConfig.layer_bits_space`: its override, else
the config, with the first and last weighted layers (after exclusion) kept uniform by the shared
rule of :mod:`requant_plugin.ptq.config`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from ..ptq.config import first_last
from .config import ExportConfig
from .graph import WEIGHTED_OPS, GraphIndex, label
from .placement import QdqPlan, WeightedSite, plan_qdq
from .report import WeightInfo
from .weights import QuantizedWeight, WeightTarget, pinned_weight, quantize_weight


def check_exclude(exclude: Collection[str], fp32: Any, names: Mapping[str, str]) -> None:
    """Every ``exclude`` entry names a weighted op of ``fp32``: a layer name or an ONNX node name
    (a plain string is refused earlier, by :class:`.config.ExportConfig`)."""
    if not exclude:
        return
    full = plan_qdq(fp32, names=names)
    layers = [s.layer for s in full.weighted]
    valid = set(layers) | set(names.values()) | {label(n) for n in fp32.graph.node if n.op_type in WEIGHTED_OPS}
    for name in exclude:
        if name not in valid:
            raise ValueError(f"exclude names an unknown layer {name!r}; quantizable layers are: {layers}")


def check_override_layers(overrides: Mapping[str, Any], layers: list[str]) -> None:
    """Every ``overrides`` key names a layer of the graph (the entries are checked by the config)."""
    for name in overrides:
        if name not in layers:
            raise ValueError(f"overrides names an unknown layer {name!r}; quantizable layers are: {layers}")


def _weight_info(site: WeightedSite, qw: QuantizedWeight) -> WeightInfo:
    return WeightInfo(
        layer=site.layer,
        node=site.node,
        op_type=site.op_type,
        tensor=qw.tensor,
        inputs=site.data_inputs,
        shape=tuple(qw.q.shape),
        axis=qw.axis,
        bits=qw.bits,
        space=qw.space,
        alpha=qw.alpha,
        fq_mse=qw.fq_mse,
        mse=qw.mse,
        snap_extra_mse=qw.snap_extra_mse,
        rel_mse=qw.rel_mse,
        distinct_int8=qw.distinct,
    )


def quantize_plan_weights(
    fp32: Any,
    plan: QdqPlan,
    config: ExportConfig,
    pinned: Mapping[str, Any],
    scale_dtype: type,
) -> tuple[dict[str, QuantizedWeight], list[WeightInfo]]:
    """REQuant every constant weight of the plan onto the int8 grid (one entry per initializer,
    one :class:`WeightInfo` per site); layers in ``pinned`` keep the given grid (their weights
    must already lie on it)."""
    index = GraphIndex(fp32)
    with_w = [s for s in plan.weighted if s.weight is not None]
    ends = first_last([s.layer for s in with_w])
    qweights: dict[str, QuantizedWeight] = {}
    infos: list[WeightInfo] = []
    for site in with_w:
        assert site.weight is not None
        if site.weight not in qweights:
            value = index.const_value(site.weight)
            assert value is not None
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"layer {site.layer!r} has NaN/Inf weights; fix the checkpoint or "
                    f"exclude the layer (exclude=[{site.layer!r}])"
                )
            target = WeightTarget(site.layer, site.weight, site.axis if config.per_channel else None)
            if site.layer in pinned:
                qweights[site.weight] = pinned_weight(value, pinned[site.layer], target, scale_dtype=scale_dtype)
            else:
                bits, space = config.layer_bits_space(site.layer, ends)
                qweights[site.weight] = quantize_weight(
                    value, target, bits=bits, space=str(space), p=config.p, search=str(config.search),
                    scale_dtype=scale_dtype,
                )
        qw = qweights[site.weight]
        infos.append(_weight_info(site, qw))
    return qweights, infos
