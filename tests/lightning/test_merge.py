"""REQuantCalibration under real CPU DDP (2 processes, gloo), launched from a subprocess, and the
histogram merge rule of :mod:`requant_plugin.lightning.merge`.

Every rank must end with identical ranges, computed from BOTH ranks' calibration data: checked
against a single-process FX calibration over the union of the recorded per-rank batches.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from refs import litmods
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_fx

from requant_plugin.lightning.merge import merge_histograms
from requant_plugin.zoo import SmallCNN

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run([sys.executable, str(HERE / "ddp_script.py"), str(out)],
                          capture_output=True, text=True, timeout=400, cwd=str(out),
                          env=litmods.child_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _reference(r0, r1, mapping, key):
    """Single-process FX calibration of rank 0's float weights on rank 0's then rank 1's inputs."""
    model = SmallCNN(1, 10, 8)
    model.load_state_dict(r0["float"])
    inputs = r0[key] + r1[key]
    ref = prepare_fx(copy.deepcopy(model).eval(), mapping, (inputs[0],))
    with torch.no_grad():
        for x in inputs:
            ref(x)
    return ref


def test_two_ranks_with_different_data(ranks):
    r0, r1 = ranks
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert len(r0["requant_inputs"]) == len(r1["requant_inputs"]) == 3
    assert not any(torch.equal(a, b) for a, b in zip(r0["requant_inputs"], r1["requant_inputs"], strict=True))
    # BatchNorm running stats are per rank under DDP: the callback quantizes rank 0's
    assert not _equal(r0["float"], r1["float"])


def test_requant_observer_states_identical_and_merged(ranks):
    from requant_plugin.qconfig import get_requant_qconfig_mapping

    r0, r1 = ranks
    got0, got1 = r0["requant_state"]["observer_state"], r1["requant_state"]["observer_state"]
    assert _equal(got0, got1)
    assert r0["requant_state"]["summary"] == r1["requant_state"]["summary"]
    assert torch.equal(r0["probe_out"], r1["probe_out"])
    ref = _reference(r0, r1, get_requant_qconfig_mapping(), "requant_inputs")
    checked = 0
    for name, obs in ref.named_modules():
        if "activation_post_process" not in name:
            continue
        assert float(got0[f"{name}.min_val"]) == float(obs.min_val)
        assert float(got0[f"{name}.max_val"]) == float(obs.max_val)
        assert float(got0[f"{name}.hist_count"].sum()) == pytest.approx(float(obs.hist_count.sum()), rel=1e-12)
        merged = copy.deepcopy(obs)
        merged.load_state_dict({k.split(".", 1)[1]: v for k, v in got0.items() if k.split(".")[0] == name})
        s_ref, z_ref = obs.calculate_qparams()
        s_got, z_got = merged.calculate_qparams()
        # bin layouts differ (batch-wise vs rank-wise merges), so alpha agrees to the bin width
        assert torch.allclose(s_got, s_ref, rtol=0.02) and (z_got - z_ref).abs().max() <= 2
        checked += 1
    assert checked >= 4


def test_torch_histogram_observer_states_identical_and_merged(ranks):
    r0, r1 = ranks
    got0 = r0["hist_state"]["observer_state"]
    assert _equal(got0, r1["hist_state"]["observer_state"])
    ref = _reference(r0, r1, get_default_qconfig_mapping("x86"), "hist_inputs")
    for name, obs in ref.named_modules():
        if "activation_post_process" in name:
            assert float(got0[f"{name}.min_val"]) == float(obs.min_val)
            assert float(got0[f"{name}.max_val"]) == float(obs.max_val)
            assert float(got0[f"{name}.histogram"].sum()) == pytest.approx(float(obs.histogram.sum()))


def test_weights_only_identical_across_ranks(ranks):
    r0, r1 = ranks
    assert _equal(r0["weights_q"], r1["weights_q"])
    w = r0["weights_q"]["conv2.weight"]
    assert max(len(torch.unique(row)) for row in w.flatten(1)) <= 16


def test_histogram_merge_conserves_mass_and_is_exact_on_a_shared_range():
    a = {"histogram": torch.tensor([1.0, 2.0, 3.0, 4.0]), "min_val": torch.tensor(0.0),
         "max_val": torch.tensor(4.0), "eps": torch.tensor([1e-7])}
    b = {**a, "histogram": torch.tensor([4.0, 0.0, 0.0, 1.0])}
    same = merge_histograms([a, b])
    assert torch.equal(same["histogram"], torch.tensor([5.0, 2.0, 3.0, 5.0]))
    wide = {**a, "histogram": torch.tensor([8.0, 0.0, 0.0, 0.0]), "min_val": torch.tensor(-4.0)}
    merged = merge_histograms([a, wide])
    assert (float(merged["min_val"]), float(merged["max_val"])) == (-4.0, 4.0)
    assert float(merged["histogram"].sum()) == pytest.approx(18.0)
    # [-4, 4] in 4 bins of width 2: `wide` keeps its 8 in [-4, -2]; a's unit bins (1, 2, 3, 4)
    # on [0, 4] pair up into [0, 2] and [2, 4]
    assert torch.allclose(merged["histogram"], torch.tensor([8.0, 0.0, 3.0, 7.0]))
    # a bin split by a new edge is shared in proportion to the overlap
    shifted = {**a, "histogram": torch.zeros(4), "min_val": torch.tensor(-0.5),
               "max_val": torch.tensor(7.5)}
    split = merge_histograms([a, shifted])["histogram"]  # edges -0.5, 1.5, 3.5, 5.5, 7.5
    assert torch.allclose(split, torch.tensor([1.0 + 1.0, 1.0 + 3.0 + 2.0, 2.0, 0.0]))
    empty = {**a, "min_val": torch.tensor(float("inf")), "max_val": torch.tensor(float("-inf"))}
    assert torch.equal(merge_histograms([empty, a])["histogram"], a["histogram"])


def test_streaming_merge_of_requant_observers_is_exact():
    """Two ranks' REQuant activation observers (single process): the merged histogram holds both
    ranks' mass and range, as one observer that saw both batches."""
    from requant_plugin.lightning.merge import merge_observer
    from requant_plugin.observers import REQuantObserver

    torch.manual_seed(0)
    xs = [torch.randn(4096), 3 * torch.randn(4096) + 1]
    per_rank = []
    for x in xs:
        obs = REQuantObserver()
        obs(x)
        per_rank.append({k: v.clone() for k, v in obs.state_dict().items()})
    both = REQuantObserver()
    for x in xs:
        both(x)
    merged = REQuantObserver()
    assert merge_observer(merged, per_rank) == "streaming"
    assert (float(merged.min_val), float(merged.max_val)) == (float(both.min_val), float(both.max_val))
    assert float(merged.hist_count.sum()) == pytest.approx(float(both.hist_count.sum()), rel=1e-12)
    s_ref, z_ref = both.calculate_qparams()
    s_got, z_got = merged.calculate_qparams()
    assert torch.allclose(s_got, s_ref, rtol=0.02) and (z_got - z_ref).abs().max() <= 2
