"""The peer benchmark's in-process adapters (Brevitas GPTQ / GPFQ / learned round, REQuant paper /
beyond) on a tiny model: each returns a model whose weights really are quantized."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from benchmarks.results_peers.cli import max_distinct
from benchmarks.results_peers.methods import BY_KEY, CellError, bits_of, run_worker


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


def cal() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 8, 8, generator=g) for _ in range(2)]


def per_channel_distinct(model: nn.Module) -> list[int]:
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            out += [len(torch.unique(r)) for r in w]
    return out


@pytest.mark.parametrize("key", ["paper", "beyond"])
@pytest.mark.parametrize("bits", [2, 3])
def test_ours_quantizes(key: str, bits: int) -> None:
    model = tiny()
    q, secs = BY_KEY[key].run(model, bits, cal(), {})
    assert secs >= 0
    assert max(per_channel_distinct(q)) <= 2**bits
    assert max_distinct(q) <= 2**bits
    assert not torch.equal(q[0].weight, model[0].weight)


@pytest.mark.filterwarnings("ignore")  # Brevitas' own deprecation warnings (brevitas.fx, torch.fx)
@pytest.mark.parametrize("key", ["brevitas-gptq", "brevitas-gpfq", "brevitas-lr"])
def test_brevitas_quantizes(key: str) -> None:
    pytest.importorskip("brevitas")
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    q, _ = BY_KEY[key].run(model, 3, cal(), {"lr_iters": 5})
    assert isinstance(q[0], nn.Conv2d)  # a plain float model carrying the quantized weights
    assert max(per_channel_distinct(q)) <= 2**3
    assert q[0].bias is not None  # Brevitas' bias correction added a bias
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # input untouched


def test_setting_names() -> None:
    assert bits_of("W4") == (4, None)
    assert bits_of("W4A8") == (4, 8)


def test_cache_key_carries_the_iterations_a_gradient_peer_runs() -> None:
    from benchmarks.results_peers.cli import cell_options

    assert cell_options("aimet-adaround", 1000) == {"lr_iters": 1000}  # the command's budget
    assert cell_options("aimet-adaround-15k", 1000) == {"lr_iters": 15_000}  # AIMET's own default, fixed
    assert cell_options("brevitas-gptq", 1000) == {}  # no iterations: one key for every --lr-iters


def test_missing_venv_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import benchmarks.results_peers.methods as methods

    monkeypatch.setattr(methods, "VENVS", tmp_path)
    with pytest.raises(CellError, match="not installed: python3 -m venv"):
        run_worker("modelopt", "worker_modelopt.py", {"bits": 4})


@pytest.mark.parametrize("key", ["pt2e", "pt2e-layers", "pt2e-ends8", "pt2e-ends8-layers", "pt2e-float-acts"])
def test_ours_integer_graph_row_runs_activation_settings_only(key: str) -> None:
    pytest.importorskip("torchao")
    model = tiny()
    with pytest.raises(CellError, match="activation settings only"):
        BY_KEY[key].run(model, 4, cal(), {})
    q, secs = BY_KEY[key].run(model, 4, cal(), {"act_bits": 4})
    x = cal()[0]
    with torch.no_grad():
        y, ref = q(x), model(x)
    assert secs >= 0 and y.shape == ref.shape and torch.isfinite(y).all()
    assert not torch.allclose(y, ref)  # quantized, and the user's model is untouched by it
    graph_ops = {str(n.target) for n in q.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in t for t in graph_ops)  # 4-bit activations in the integer graph


def test_eight_bit_weight_row_keeps_eight_bit_weights_in_a_four_bit_cell() -> None:
    pytest.importorskip("torchao")
    model = tiny()
    q4, _ = BY_KEY["pt2e"].run(model, 4, cal(), {"act_bits": 4})
    q8, _ = BY_KEY["pt2e-w8"].run(model, 4, cal(), {"act_bits": 4})
    assert not BY_KEY["pt2e-w8"].same_setting  # another setting: never a peer comparison

    def weight_levels(q: nn.Module) -> set[int]:  # quant_max - quant_min + 1 of every weight quantize node
        return {int(n.args[5]) - int(n.args[4]) + 1 for n in q.graph.nodes  # type: ignore[call-overload]
                if n.op == "call_function" and "quantize_per_channel" in str(n.target)}

    assert max(weight_levels(q4)) <= 16 and min(weight_levels(q8)) >= 255


def test_peer_seeds_table_compares_on_the_same_seeds() -> None:
    from benchmarks.results_peers.doc import peer_seed_cells, peer_seeds_table

    by_seed = {0: {("r", "brevitas-gpfq", "W4"): {"acc": 86.0}, ("r", "beyond", "W4"): {"acc": 86.5}},
               1: {("r", "brevitas-gpfq", "W4"): {"acc": 87.0}, ("r", "beyond", "W4"): {"acc": 86.7}},
               2: {("r", "beyond", "W4"): {"acc": 80.0}}}  # no peer cell: seed 2 is left out of both means
    text = peer_seeds_table(peer_seed_cells(by_seed, ["r"], ["beyond", "brevitas-gpfq"]), [0, 1, 2])
    row = next(line for line in text.splitlines() if "GPFQ" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-4:] == ["86.50", "86.60", "+0.10", "1 of 2"]
    assert peer_seed_cells({0: by_seed[0]}, ["r"], ["beyond", "brevitas-gpfq"]) == []  # one seed: no row


def test_peer_seeds_plot_is_written(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.results_peers.plots import plot_peer_seeds

    cells = [("r", "brevitas-gpfq", "W4", [(86.0, 86.5), (87.0, None)])]
    assert plot_peer_seeds(tmp_path / "seeds.png", cells, {"r": 86.9})
    assert (tmp_path / "seeds.png").stat().st_size > 1000
    assert not plot_peer_seeds(tmp_path / "none.png", cells, {})  # no FP32 for the model: nothing to draw


FAKE_TORCHVISION = '''
import torch
if {check}:
    raise RuntimeError("operator torchvision::nms does not exist")
'''
PROBE = '''
import torch
from benchmarks.results_peers.worker_aimet import import_torchvision
print(import_torchvision(), hasattr(torch.ops.torchvision, "nms"), hasattr(torch.ops.torchvision, "qnms"))
'''


@pytest.mark.parametrize(("fails", "expected"), [(True, "stand-in True True"), (False, "native False False")])
def test_aimet_worker_declares_torchvision_ops_only_when_they_do_not_load(tmp_path, fails: bool, expected: str) -> None:
    """A torchvision whose import fails on its missing ``torchvision::nms`` (the CUDA wheel beside the CPU torch)
    imports after the worker declares the two schemas; a torchvision that imports gets nothing declared. Run in
    a subprocess: the declared operators would outlive the test in this one."""
    from benchmarks.harness.paths import ROOT

    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    check = 'not hasattr(torch.ops.torchvision, "nms")' if fails else "False"
    (pkg / "__init__.py").write_text(FAKE_TORCHVISION.format(check=check))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == expected
