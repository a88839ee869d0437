"""refine_activation_ranges: the shared range factor fitted on the output error (FX and pt2e),
checked against an independent convert-and-measure of the same prepared model."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
from torch import nn
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from requant_plugin import get_requant_qconfig_mapping
from requant_plugin.observers import REQuantObserver
from requant_plugin.refine import LAYER_FACTORS, RefineConfig, activation_observers, refine_activation_ranges


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.conv1(x))
        y = self.relu2(self.conv2(y) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


def _batches(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(16, 3, 8, 8, generator=g) * 2 for _ in range(n)]


def _prepared(net: nn.Module, batches: list[torch.Tensor], act_bits: int = 4) -> torch.nn.Module:
    torch.backends.quantized.engine = "x86"
    p = prepare_fx(copy.deepcopy(net).eval(), get_requant_qconfig_mapping(act_bits=act_bits), (batches[0],))
    with torch.no_grad():
        for x in batches:
            p(x)
    return p


def _output_mse(quantized: nn.Module, net: nn.Module, batches: list[torch.Tensor]) -> float:
    with torch.no_grad():
        num = sum(float(((quantized(x) - net(x)) ** 2).sum()) for x in batches)
    return num / sum(net(x).numel() for x in batches)


def _act_scales(q: nn.Module) -> list[float]:
    return [float(m.scale) for m in q.modules() if isinstance(m, torch.ao.nn.quantized.Conv2d)]


def test_fx_refinement_matches_an_independent_measurement() -> None:
    torch.manual_seed(0)
    net, batches = Net().eval(), _batches()
    prep = _prepared(net, batches)
    plain = convert_fx(copy.deepcopy(prep))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    res = refine_activation_ranges(prep, net, batches, lower=0.5, tol=0.02, layer_factors=())  # shared stage only
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # reference untouched
    assert 0.5 <= res.factor <= 1.0 and res.observers == len(activation_observers(prep)) > 0
    assert all(float(m.range_factor) == res.factor for m in activation_observers(prep).values())
    refined = convert_fx(copy.deepcopy(prep))
    # the converted ranges are the plain ones times the factor
    for a, b in zip(_act_scales(plain), _act_scales(refined), strict=True):
        assert b == pytest.approx(res.factor * a, rel=1e-5)
    # the reported errors are what the converted models really do
    assert res.error == pytest.approx(_output_mse(refined, net, batches), rel=1e-6)
    assert res.error_at_one == pytest.approx(_output_mse(plain, net, batches), rel=1e-6)
    assert res.error <= res.error_at_one and (1.0, res.error_at_one) in res.points


def test_the_error_is_measured_on_the_first_whole_batches_holding_images() -> None:
    torch.manual_seed(0)
    net, batches = Net().eval(), _batches(4)  # 4 batches of 16 images
    prep = _prepared(net, batches)
    plain = convert_fx(copy.deepcopy(prep))
    res = refine_activation_ranges(prep, net, batches, lower=0.5, tol=0.05, images=20)
    assert res.images == 32  # 20 images need two whole batches
    assert res.error_at_one == pytest.approx(_output_mse(plain, net, batches[:2]), rel=1e-6)
    assert res.error == pytest.approx(_output_mse(convert_fx(copy.deepcopy(prep)), net, batches[:2]), rel=1e-6)
    assert refine_activation_ranges(_prepared(net, batches), net, batches, tol=0.05, images=None).images == 64
    for bad in (0, -3, 2.5, True, "256"):
        with pytest.raises(ValueError, match="images must be an integer >= 1 or None"):
            RefineConfig(images=bad)  # type: ignore[arg-type]


def test_state_dict_carries_the_factor_and_old_state_dicts_load() -> None:
    obs = REQuantObserver(quant_min=0, quant_max=127)
    obs(torch.rand(1000) * 3)
    obs.set_range_factor(0.9)
    fresh = REQuantObserver(quant_min=0, quant_max=127)
    fresh.load_state_dict(obs.state_dict())
    assert float(fresh.range_factor) == 0.9
    assert float(fresh.calculate_qparams()[0]) == pytest.approx(float(obs.calculate_qparams()[0]), rel=1e-12)
    old = {k: v for k, v in obs.state_dict().items() if k != "range_factor"}  # saved before the buffer existed
    again = REQuantObserver(quant_min=0, quant_max=127)
    again.load_state_dict(old)  # strict
    assert float(again.range_factor) == 1.0
    obs.set_range_factor(1.0)
    assert float(again.calculate_qparams()[0]) == pytest.approx(float(obs.calculate_qparams()[0]), rel=1e-12)


def test_range_factor_scales_the_searched_range_without_a_new_search() -> None:
    obs = REQuantObserver(quant_min=0, quant_max=255)
    obs(torch.rand(4000) ** 2 * 5)
    s1, _ = obs.calculate_qparams()
    alpha = obs.last_alpha
    obs.set_range_factor(0.8)
    s2, _ = obs.calculate_qparams()
    assert obs.last_alpha == alpha and float(s2) == pytest.approx(0.8 * float(s1), rel=1e-6)  # float32 scales


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.01, float("nan")])
def test_range_factor_must_shrink(bad: float) -> None:
    with pytest.raises(ValueError, match="range_factor must be in"):
        REQuantObserver().set_range_factor(bad)


def test_reference_in_train_mode_is_run_in_eval_and_left_as_it_was() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
    batches = _batches(2)
    prep = _prepared(net.eval(), batches, act_bits=8)
    net.train()
    stats = net[1].running_mean.clone()
    res = refine_activation_ranges(prep, net, batches)
    assert net.training and torch.equal(net[1].running_mean, stats)
    net.eval()  # the error was measured against the eval-mode outputs
    for m in activation_observers(prep).values():
        m.set_range_factor(1.0)
    assert res.error_at_one == pytest.approx(_output_mse(convert_fx(copy.deepcopy(prep)), net, batches), rel=1e-6)


def test_bad_inputs_name_the_fix() -> None:
    from torch.ao.quantization import get_default_qconfig_mapping

    net, batches = Net().eval(), _batches(1)
    default = prepare_fx(copy.deepcopy(net), get_default_qconfig_mapping("x86"), (batches[0],))
    with pytest.raises(ValueError, match="get_requant_qconfig_mapping"):
        refine_activation_ranges(default, net, batches)
    uncalibrated = prepare_fx(copy.deepcopy(net), get_requant_qconfig_mapping(), (batches[0],))
    with pytest.raises(ValueError, match="has seen no data: run the calibration"):
        refine_activation_ranges(uncalibrated, net, batches)
    prep = _prepared(net, batches)
    with pytest.raises(ValueError, match="lower must be in"):
        refine_activation_ranges(prep, net, batches, lower=1.0)
    with pytest.raises(ValueError, match="at least one batch"):
        refine_activation_ranges(prep, net, [])
    with pytest.raises(ValueError, match="unknown flow"):
        refine_activation_ranges(prep, net, batches, flow="onnx")  # type: ignore[arg-type]
    assert all(float(m.range_factor) == 1.0 for m in activation_observers(prep).values())


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.net(x)
        return y, y


def test_a_model_that_returns_a_tuple_is_refused_with_the_fix() -> None:
    torch.manual_seed(0)
    model, batches = TupleOut().eval(), _batches(1)
    prep = _prepared(model, batches)
    with pytest.raises(TypeError, match="returns one tensor, got tuple: wrap it"):
        refine_activation_ranges(prep, model, batches)
    assert all(float(m.range_factor) == 1.0 for m in activation_observers(prep).values())


def test_pt2e_refinement() -> None:
    pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")
    torch.manual_seed(0)
    net, batches = Net().eval(), _batches()
    prep = _pt2e_prepared(net, batches, pooled_input="shared")  # a graph whose error is lowest below 1

    def measured() -> float:
        return _output_mse(_pt2e_converted(prep), net, batches)

    plain = measured()
    res = refine_activation_ranges(prep, net, batches, flow="pt2e", lower=0.5, tol=0.02)
    assert res.error_at_one == pytest.approx(plain, rel=1e-6)
    assert res.factor < 1.0 and res.error < res.error_at_one
    assert res.error == pytest.approx(measured(), rel=1e-6)


def _pt2e_prepared(net: nn.Module, batches: list[torch.Tensor], act_bits: int = 4, **options: object) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from requant_plugin.pt2e import get_requant_quantizer

    exported = torch.export.export(copy.deepcopy(net), (batches[0],)).module()
    prep = prepare_pt2e(exported, get_requant_quantizer(8, act_bits, **options))
    with torch.no_grad():
        for x in batches:
            prep(x)
    return prep


def _copy(prep: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # torch's deprecation notice when copying an exported graph
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        return copy.deepcopy(prep)


def _pt2e_converted(prep: nn.Module) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(_copy(prep))


def test_simulated_pt2e_graph_computes_what_the_converted_graph_computes() -> None:
    """The simulation fake-quantizes at every observer, weights included; the converted graph's
    decomposed q/dq ops compute the same values (the weights are folded into int8 constants there)."""
    pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")
    from requant_plugin.refine import simulated

    torch.manual_seed(0)
    net, batches = Net().eval(), _batches()
    prep = _pt2e_prepared(net, batches)
    for factor in (1.0, 0.85):
        for m in activation_observers(prep).values():
            m.set_range_factor(factor)
        converted = _pt2e_converted(prep)
        with torch.no_grad(), simulated(prep) as sim:
            for x in batches:
                assert torch.equal(sim(x), converted(x))  # bit for bit: the refinement searches on it
    before = {n: m.histogram().total for n, m in activation_observers(prep).items()}
    with torch.no_grad():
        prep(batches[0])  # observing again after the context: the patch is gone
    assert all(m.histogram().total > before[n] for n, m in activation_observers(prep).items())


@pytest.mark.parametrize("exact", [True, False])
def test_pt2e_search_scores_each_factor_as_the_converted_graph_does(exact: bool, monkeypatch: pytest.MonkeyPatch,
                                                                    ) -> None:
    """Every (factor, error) the pt2e search saw equals a conversion measured independently at that factor,
    through the simulation (bit-exact) or, where the simulation is not exact, through conversions."""
    pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")
    import requant_plugin.observers.refine as refine_mod

    if not exact:  # a simulation off by one part in 1e3: the search must fall back to converting
        fast = refine_mod.fake_quant_per_tensor
        monkeypatch.setattr(refine_mod, "fake_quant_per_tensor", lambda *a: fast(*a) * 1.001)
    torch.manual_seed(0)
    net, batches = Net().eval(), _batches()
    prep = _pt2e_prepared(net, batches)
    res = refine_activation_ranges(prep, net, batches, flow="pt2e", lower=0.5, tol=0.05)
    assert len(res.points) >= 5
    for beta, err in res.points:
        for m in activation_observers(prep).values():
            m.set_range_factor(beta)
        assert err == pytest.approx(_output_mse(_pt2e_converted(prep), net, batches), rel=1e-6)


def test_per_observer_factors_are_kept_only_when_the_converted_error_drops() -> None:
    pytest.importorskip("torchao", reason="the pt2e extra (torchao) is not installed")
    torch.manual_seed(0)
    net, batches = Net().eval(), _batches(4)
    prep = _pt2e_prepared(net, batches, act_bits=3, pooled_input="shared")  # a graph where some observer's move pays
    shared = refine_activation_ranges(_copy(prep), net, batches, flow="pt2e", lower=0.5, tol=0.02)
    same = refine_activation_ranges(_copy(prep), net, batches, flow="pt2e", lower=0.5, tol=0.02,
                                    layer_factors=(1.0,))  # nothing to try: the shared result
    assert same.layer_factors == {} and same.error == shared.error == same.error_shared
    # the simulation runs on all 4 batches here, so a move it accepts lowers the converted error too
    res = refine_activation_ranges(prep, net, batches, flow="pt2e", lower=0.5, tol=0.02,
                                   layer_factors=(0.6, 0.8, 1.2), layer_batches=4)
    assert res.factor == shared.factor and res.error_shared == pytest.approx(shared.error, rel=1e-9)
    assert res.layer_factors and res.error < shared.error
    assert res.error == pytest.approx(_output_mse(_pt2e_converted(prep), net, batches), rel=1e-6)
    allowed = [min(1.0, c * res.factor) for c in (0.6, 0.8, 1.2)]
    for name, m in activation_observers(prep).items():  # each holds its own factor, or the shared one
        assert float(m.range_factor) == pytest.approx(res.layer_factors.get(name, res.factor), rel=1e-12)
        if name in res.layer_factors:
            assert any(res.layer_factors[name] == pytest.approx(a) for a in allowed)


def test_layer_stage_arguments_are_checked() -> None:
    net, batches = Net().eval(), _batches(1)
    prep = _prepared(net, batches)
    with pytest.raises(ValueError, match="layer_factors must be positive"):
        refine_activation_ranges(prep, net, batches, layer_factors=(0.0, 0.9))
    with pytest.raises(ValueError, match="layer_batches >= 1"):
        refine_activation_ranges(prep, net, batches, layer_factors=(0.9,), layer_batches=0)


def test_fx_refines_per_observer_by_default_and_pt2e_on_request() -> None:
    assert RefineConfig().factors == LAYER_FACTORS and RefineConfig().layer_factors is None
    assert RefineConfig(flow="pt2e").factors == ()
    assert dataclasses.replace(RefineConfig(), flow="pt2e").factors == ()  # the flows pass flow= as an option
    assert RefineConfig(layer_factors=()).factors == ()  # what the user writes wins
    assert RefineConfig(flow="pt2e", layer_factors=LAYER_FACTORS).factors == LAYER_FACTORS
    net, batches = Net().eval(), _batches(4)
    prep = _prepared(net, batches)
    res = refine_activation_ranges(prep, net, batches, layer_batches=2)  # FX: the second stage runs
    assert res.error_shared is not None and res.error <= res.error_shared
    plain = refine_activation_ranges(_prepared(net, batches), net, batches, layer_factors=())
    assert plain.error_shared is None  # no second stage


def test_refine_config_is_frozen_data_and_options_win() -> None:
    cfg = RefineConfig(flow="pt2e", layer_factors=[0.8, 1.1])  # type: ignore[arg-type]
    assert cfg.layer_factors == (0.8, 1.1) and cfg.lower == 0.8 and cfg.layer_batches == 2
    with pytest.raises(ValueError, match="lower must be in"):
        RefineConfig(lower=0.0)
    net, batches = Net().eval(), _batches(2)
    prep = _prepared(net, batches)
    with pytest.raises(TypeError, match=r"unknown refine option\(s\) \['lowr'\]; valid: \['flow', 'lower'"):
        refine_activation_ranges(prep, net, batches, lowr=0.5)
    res = refine_activation_ranges(prep, net, batches, RefineConfig(lower=0.9, tol=0.05), lower=0.5)
    assert min(x for x, _ in res.points) < 0.9  # the keyword won over the config's lower
