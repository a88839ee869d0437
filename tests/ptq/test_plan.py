"""ptq.plan: one LayerPlan per weight from the config, its overrides and the first/last rule."""

from __future__ import annotations

from torch import nn

from requant_plugin.options import PerChannel, Space
from requant_plugin.ptq import QuantizeConfig
from requant_plugin.ptq.plan import plan_attention, plan_layers, quantizable_layers


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.ConvTranspose2d(8, 8, 2), nn.Conv2d(8, 4, 1),
                         nn.Flatten(), nn.LazyLinear(2))


def test_plan_applies_the_first_last_rule_and_overrides() -> None:
    layers = quantizable_layers(_net())
    cfg = QuantizeConfig(space=Space.SQRT, overrides={"3": {"bits": 8, "per_channel": True}, "5": {"space": "sqrt"}})
    plans = {p.name: p for p in plan_layers(cfg, layers)}
    assert plans["0"].space is Space.UNIFORM and plans["0"].end  # first layer: uniform
    assert plans["2"].space is Space.SQRT and plans["2"].ch_axis == 1  # ConvTranspose: axis 1
    assert plans["3"].bits == 8 and plans["3"].per_channel and not plans["2"].per_channel
    assert plans["5"].space is Space.SQRT and plans["5"].end  # an override lifts the rule
    every = plan_layers(QuantizeConfig(transform_first_last=True, granularity=PerChannel()), layers)
    assert all(p.space is Space.SQRT and p.per_channel for p in every)


def test_attention_weights_are_never_first_or_last() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.MultiheadAttention(8, 2))
    (plan,) = plan_attention(QuantizeConfig(), model)
    assert plan.name == "1.in_proj_weight" and plan.space is Space.SQRT and not plan.end


def test_end_bits_set_the_first_and_last_layers_weights_and_inputs() -> None:
    layers = quantizable_layers(_net())
    cfg = QuantizeConfig(bits=4, end_bits=8, inputs="quantized", act_bits=4,  # type: ignore[arg-type]
                         overrides={"5": {"bits": 6}, "2": {"act_bits": 6}})
    plans = {p.name: p for p in plan_layers(cfg, layers)}
    assert (plans["0"].bits, plans["0"].act_bits) == (8, 8)  # first layer: weights and input
    assert (plans["5"].bits, plans["5"].act_bits) == (6, 8)  # an override wins over end_bits
    assert (plans["2"].bits, plans["2"].act_bits) == (4, 6) and (plans["3"].bits, plans["3"].act_bits) == (4, 4)
    weights_only = {p.name: p for p in plan_layers(QuantizeConfig(bits=3, end_bits=8), layers)}
    assert weights_only["0"].bits == 8 and weights_only["0"].act_bits is None and weights_only["2"].bits == 3
