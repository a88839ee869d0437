"""ptq.calibration: im2col rows, Gram/mean accumulation and the forward hooks.

References: the layer's own forward (``rows @ W^T + b`` must equal ``conv(x)``), F.unfold on
the whole batch, and one-shot NumPy statistics of all rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refs.nets import Unused
from torch import nn

from requant_plugin.ptq.calibration import (
    collect_statistics,
    im2col_rows,
    input_row_sum,
)

CONVS = [
    lambda: nn.Conv2d(4, 6, 3, padding=1),
    lambda: nn.Conv2d(4, 6, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), groups=2),
    lambda: nn.Conv2d(4, 4, 3, padding="same", padding_mode="reflect"),
    lambda: nn.Conv2d(4, 4, 3, padding="valid", stride=(1, 2)),
    lambda: nn.Conv2d(4, 8, 1, groups=4),
    lambda: nn.Conv1d(4, 6, 3, padding=2, stride=2),
    lambda: nn.Conv1d(4, 4, 5, padding="same", padding_mode="circular"),
    lambda: nn.Linear(7, 5),
]


def _input(layer: nn.Module, batch: int = 3) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return torch.randn(batch, 2, 7)
    return torch.randn(batch, 4, 9, 10) if isinstance(layer, nn.Conv2d) else torch.randn(batch, 4, 11)


def _expected_rows(layer: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """rows (M, g, n) @ W^T per group -> (M, C)."""
    c = layer.weight.shape[0]
    g = rows.shape[1]
    w = layer.weight.detach().reshape(g, c // g, -1)
    return torch.einsum("mgn,gcn->mgc", rows.double(), w.double()).reshape(rows.shape[0], c)


@pytest.mark.parametrize("make", CONVS)
def test_rows_reproduce_the_layer_output(make) -> None:
    torch.manual_seed(0)
    layer = make()
    x = _input(layer)
    rows = im2col_rows(layer, x)
    with torch.no_grad():
        y = layer(x) - layer.bias.reshape([1, -1] + [1] * (x.dim() - 2) if not isinstance(layer, nn.Linear)
                                          else [1, 1, -1])
    yy = y.reshape(-1, y.shape[-1]) if isinstance(layer, nn.Linear) else y.movedim(1, -1).reshape(-1, y.shape[1])
    torch.testing.assert_close(_expected_rows(layer, rows), yy.double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", CONVS)
def test_sampled_rows_are_rows_and_row_sum_is_exact_to_float32(make) -> None:
    torch.manual_seed(1)
    layer = make()
    x = _input(layer)
    full = im2col_rows(layer, x).reshape(-1, im2col_rows(layer, x).shape[1] * im2col_rows(layer, x).shape[2])
    sub = im2col_rows(layer, x, max_rows=5, generator=torch.Generator().manual_seed(0))
    assert sub.shape[0] == 5
    sub = sub.reshape(5, -1)
    for r in sub:  # each drawn row is one of the rows, bit for bit
        assert bool((full == r).all(dim=1).any())
    total, count = input_row_sum(layer, x)
    assert count == full.shape[0]
    # the batch is summed in float32 before unfolding: exact up to float32 rounding of that sum
    magnitude = full.double().abs().sum(dim=0)
    assert bool(((total.reshape(-1) - full.double().sum(dim=0)).abs() <= 1e-6 * magnitude + 1e-12).all())
    if x.dim() == 4:  # a float64 input is summed in float64: exact
        total64, _ = input_row_sum(layer, x.double())
        torch.testing.assert_close(total64.reshape(-1), full.double().sum(dim=0), atol=1e-9, rtol=1e-9)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


def test_collected_statistics_equal_one_shot_numpy() -> None:
    net = _net()
    batches = [torch.randn(5, 3, 8, 8) for _ in range(3)]
    stats = collect_statistics(net, batches, ["0", "3", "7"], max_rows=None)
    feats = {"0": [], "3": [], "7": []}
    with torch.no_grad():
        for x in batches:
            h = x
            for i, m in enumerate(net):
                if str(i) in feats:
                    feats[str(i)].append(torch.nn.functional.unfold(h, 3, padding=1, stride=m.stride)
                                         .transpose(1, 2).reshape(-1, m.weight[0].numel())
                                         if isinstance(m, nn.Conv2d) else h)
                h = m(h)
    for name, parts in feats.items():
        x = torch.cat(parts).double().numpy()
        np.testing.assert_allclose(stats[name].gram[0], x.T @ x / x.shape[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats[name].mean[0], x.mean(axis=0), rtol=1e-6, atol=1e-8)  # float32 batch sums
        assert stats[name].count == x.shape[0] == stats[name].gram_count


def test_merge_equals_joint_collection_and_subsampling_is_unbiased() -> None:
    net = _net()
    batches = [torch.randn(8, 3, 8, 8) for _ in range(4)]
    joint = collect_statistics(net, batches, ["3"], max_rows=None)["3"]
    a = collect_statistics(net, batches[:2], ["3"], max_rows=None)["3"]
    b = collect_statistics(net, batches[2:], ["3"], max_rows=None)["3"]
    merged = a.merge(b)
    np.testing.assert_allclose(merged.gram, joint.gram, rtol=1e-6)
    np.testing.assert_allclose(merged.mean, joint.mean, rtol=1e-9)
    sub = collect_statistics(net, batches, ["3"], max_rows=64, seed=3)["3"]
    assert sub.gram_count == 4 * 64 and sub.count == joint.count  # mean stays exact
    np.testing.assert_allclose(sub.mean, joint.mean, rtol=1e-9)
    rel = np.linalg.norm(sub.gram - joint.gram) / np.linalg.norm(joint.gram)
    assert rel < 0.25


def test_rows_per_layer_name() -> None:
    net = _net()
    batches = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    stats = collect_statistics(net, batches, ["0", "3"], max_rows={"0": 10, "3": None}, seed=1)
    assert stats["0"].gram_count == 3 * 10 and stats["3"].gram_count == stats["3"].count > 3 * 10


def test_stop_early_and_accepted_batch_forms() -> None:
    net = _net()
    calls = []
    net[7].register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(4, 3, 8, 8)
    one = collect_statistics(net, [(x, torch.zeros(4))], ["3"], stop_early=True)["3"]
    assert calls == []  # the forward pass stopped before the last layer
    ref = collect_statistics(net, x, ["3"])["3"]
    np.testing.assert_allclose(one.mean, ref.mean)
    assert net.training is False


def test_errors_name_the_problem() -> None:
    net = _net()
    with pytest.raises(ValueError, match="not a Linear/Conv1d/Conv2d"):
        collect_statistics(net, torch.randn(2, 3, 8, 8), ["1"])
    with pytest.raises(ValueError, match="saw no calibration input"):
        collect_statistics(Unused(), torch.randn(2, 3), ["used", "extra"])
