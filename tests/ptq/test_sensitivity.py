"""ptq.sensitivity: the Fisher diagonal at layer outputs, against closed forms."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from refs.nets import DATA, Unused, make_seq_net
from torch import nn

from requant_plugin.ptq.sensitivity import output_fisher


def _batches(n: int, dim: int, seed: int = 0, batch: int = 50) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return list(x.split(batch))


def test_categorical_fisher_at_the_logits_is_p_times_one_minus_p() -> None:
    # g = e_y - p with y ~ p, so E[g_c^2] = p_c (1 - p_c): the mean over samples of the closed form
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4))
    batches = _batches(4000, 6)
    got = output_fisher(net, batches, ["0"], seed=1)["0"]
    with torch.no_grad():
        p = torch.softmax(net(torch.cat(batches)).double(), 1)
    want = (p * (1 - p)).mean(0).numpy()
    np.testing.assert_allclose(got, want, rtol=0.08)


def test_gaussian_fisher_of_a_linear_chain_is_the_column_norms() -> None:
    # a non-2-D output: unit-variance Gaussian, g_last = v and g_first = A^T v, E[g_first_c^2] = sum_k A_kc^2;
    # the output is (N, 1, 3): the Linear's channels are the last axis, summed over the one position
    torch.manual_seed(0)
    net = nn.Sequential(nn.Unflatten(1, (1, 5)), nn.Linear(5, 4), nn.Linear(4, 3))
    batches = _batches(6000, 5)
    got = output_fisher(net, batches, ["1", "2"], seed=2)
    np.testing.assert_allclose(got["2"], np.ones(3), rtol=0.06)
    col_norms = net[2].weight.detach().double().square().sum(0).numpy()
    np.testing.assert_allclose(got["1"], col_norms, rtol=0.06)


def test_conv_channels_sum_over_positions() -> None:
    # a 1x1 conv read by a mean over 4 positions then logits: each position's gradient is 1/4 of the
    # logit gradient mapped back, so the sum over positions of g^2 is 4 * (1/4)^2 = 1/4 of a single read
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 1)
    head = nn.Linear(2, 3)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = conv, head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x.expand(-1, -1, 2, 2)).mean((2, 3)))

    net = Net()
    x = torch.randn(3000, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    f = output_fisher(net, list(x.split(100)), ["conv", "head"], seed=0)
    with torch.no_grad():
        p = torch.softmax(net(x).double(), 1)
    w = head.weight.detach().double()
    # E[g_conv_c^2 summed over positions] = 1/4 E[(W^T (e_y - p))_c^2] = 1/4 E[w_c^T (diag p - p p^T) w_c]
    fish = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    want = 0.25 * torch.einsum("kc,nkj,jc->nc", w, fish, w).mean(0).numpy()
    np.testing.assert_allclose(f["conv"], want, rtol=0.1)


def test_leaves_the_model_as_it_was() -> None:
    net = make_seq_net()
    before = copy.deepcopy(net.state_dict())
    flags = [p.requires_grad for p in net.parameters()]
    output_fisher(net, DATA, ["0", "2", "6"])
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net._forward_hooks and not any(m._forward_hooks for m in net.modules())


def test_integer_inputs_and_frozen_parameters_still_reach_the_layers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(24, 6), nn.ReLU(), nn.Linear(6, 3))
    for p in net.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, 10, (64, 3), generator=torch.Generator().manual_seed(0))
    f = output_fisher(net, [ids], ["2", "4"])
    assert f["2"].shape == (6,) and f["4"].shape == (3,)
    assert (f["4"] > 0).all() and (f["2"] >= 0).all() and f["2"].sum() > 0


def test_bad_models_and_data_get_clear_errors() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.fc(x)
            return y, y

    with pytest.raises(ValueError, match="sensitivity='layer'"):
        output_fisher(Pair(), [torch.randn(4, 4)], ["fc"])
    net = make_seq_net()
    bad = [b.clone() for b in DATA]
    bad[0][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="output of layer '0' is not finite"):
        output_fisher(net, bad, ["0", "2", "6"])
    with pytest.raises(ValueError, match="did not run"):
        output_fisher(Unused(), [torch.randn(2, 3)], ["extra"])


class _Twice(nn.Module):
    """``head(f(f(x)))`` with one module ``f``, or with two copies of it (``shared=False``); ``dead`` runs, unread."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f, self.head, self.dead = nn.Linear(4, 4), nn.Linear(4, 3), nn.Linear(4, 2)
        self.g = self.f if shared else copy.deepcopy(self.f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.dead(x)
        return self.head(self.g(torch.tanh(self.f(x))))


def test_a_module_called_twice_sums_its_calls_and_an_unread_one_gets_zero() -> None:
    x = [torch.randn(40, 4, generator=torch.Generator().manual_seed(0))]
    shared = output_fisher(_Twice(True), x, ["f", "head", "dead"])
    apart = output_fisher(_Twice(False), x, ["f", "g", "head", "dead"])
    np.testing.assert_allclose(shared["f"], apart["f"] + apart["g"], rtol=1e-12)
    np.testing.assert_allclose(shared["head"], apart["head"], rtol=1e-12)
    assert shared["dead"].shape == (2,) and not shared["dead"].any()
