"""benchmarks.equalization: which pairs qualify, and the rescaled copy computes the same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.equalization import equalizable_pairs, equalize, equalize_activations


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)  # depthwise: skipped
        self.conv4, self.bn4 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.conv5 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.bn1(self.conv1(x))))  # qualifies
        z = torch.relu(self.bn2(y))
        z = self.conv3(z) + z  # two users of the ReLU: skipped
        z = self.conv4(nn.functional.relu6(self.bn3(z)))  # ReLU6 does not commute with the factor: skipped
        return self.conv5(nn.functional.relu(self.bn4(z)))  # qualifies (functional relu)


def _randomised() -> Net:
    torch.manual_seed(0)
    net = Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_pairs_are_bn_relu_conv_with_single_users() -> None:
    assert equalizable_pairs(_randomised()) == [("bn1", "conv2"), ("bn4", "conv5")]


def test_equalize_keeps_the_function_and_the_original() -> None:
    net = _randomised()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = equalize(net, 1.0)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(out(x), net(x), rtol=1e-4, atol=1e-5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    r = out.conv2.weight.detach().abs().amax(dim=(0, 2, 3))  # exponent 1: every input column on one range
    torch.testing.assert_close(r, torch.full_like(r, float(r[0])), rtol=1e-5, atol=0.0)
    assert not torch.equal(out.conv2.weight, net.conv2.weight)
    assert torch.equal(out.conv4.weight, net.conv4.weight)


def test_exponent_zero_is_the_identity() -> None:
    net = _randomised()
    out = equalize(net, 0.0)
    for (k, v), w in zip(net.state_dict().items(), out.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)


def _quantile_per_channel(x: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(x.clamp_min(0).transpose(0, 1).flatten(1)[:, ::7].float(), q, dim=1)


def test_equalize_activations_spans_each_channel_on_one_range() -> None:
    """Inside blocks: the ReLU output's channels reach one 99.9th percentile (exponent 1), the function stays."""
    net = _randomised()
    cal = [torch.randn(8, 3, 8, 8) for _ in range(2)]
    out = equalize_activations(net, cal, ("pairs",))
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(out(x), net(x), rtol=1e-4, atol=1e-5)
    acts = []
    hook = out.bn1.register_forward_hook(lambda _m, _i, o: acts.append(o.detach()))
    with torch.no_grad():
        for b in cal:
            out(b)
    hook.remove()
    # the largest per-batch percentile of each channel, as the function measures it: all equal after the scaling
    r = torch.stack([_quantile_per_channel(a, 0.999) for a in acts]).amax(0)
    torch.testing.assert_close(r, torch.full_like(r, float(r.max())), rtol=1e-4, atol=0.0)
    assert torch.equal(out.conv4.weight, net.conv4.weight)  # ReLU6 pair untouched
    same = equalize_activations(net, cal, ("pairs",), exponent=0.0)  # exponent 0: the identity
    for (k, v), w in zip(net.state_dict().items(), same.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)


def test_equalize_stream_keeps_an_option_a_resnet_and_needs_one() -> None:
    """The residual stream rescaled through the parameter-free shortcuts: the same function; a network that is not a
    CIFAR ResNet is refused."""
    from requant_plugin.zoo import resnet20

    torch.manual_seed(0)
    net = resnet20().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 3.0)
            m.bias.data.normal_()
    cal = [torch.randn(8, 3, 32, 32)]
    out = equalize_activations(net, cal, ("pairs", "stream"))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(out(x), net(x), rtol=1e-4, atol=1e-4)
    assert not torch.equal(out.bn1.weight, net.bn1.weight) and not torch.equal(out.linear.weight, net.linear.weight)
    with pytest.raises(ValueError, match="CIFAR ResNet"):
        equalize_activations(_randomised(), cal, ("stream",))
