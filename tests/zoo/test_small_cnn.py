"""The tiny CNN trains quickly and reproducibly on scikit-learn digits."""

from __future__ import annotations

import pytest
import torch
import torch.fx

from requant_plugin.data import evaluate_accuracy, load_digits
from requant_plugin.zoo import SmallCNN, train_small_cnn


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_shapes_and_tracing(channels: int, size: int) -> None:
    model = SmallCNN(channels, 10, size).eval()
    x = torch.randn(4, channels, size, size)
    assert model(x).shape == (4, 10)
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


def test_trains_on_digits_fast_and_deterministically() -> None:
    data = load_digits()
    model = train_small_cnn(data.x_train, data.y_train, epochs=10, seed=0, batch_size=64, lr=1e-2)
    assert not model.training
    accuracy = evaluate_accuracy(model, data.loader("test", batch_size=256))
    assert accuracy >= 90.0
    again = train_small_cnn(data.x_train, data.y_train, epochs=1, seed=3, batch_size=64, lr=1e-2)
    twice = train_small_cnn(data.x_train, data.y_train, epochs=1, seed=3, batch_size=64, lr=1e-2)
    for (name, a), b in zip(again.state_dict().items(), twice.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_global_rng_untouched() -> None:
    data = load_digits(train_limit=64)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_small_cnn(data.x_train, data.y_train, epochs=1, seed=0, batch_size=32, lr=1e-2)
    assert torch.equal(torch.rand(3), expected)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        train_small_cnn(
            torch.zeros(4, 1, 8, 6), torch.zeros(4, dtype=torch.long), epochs=1, seed=0, batch_size=2, lr=1e-2
        )
    with pytest.raises(ValueError):
        SmallCNN(0, 10, 8)


def test_thread_count_restored() -> None:
    data = load_digits(train_limit=64)
    before = torch.get_num_threads()
    train_small_cnn(data.x_train, data.y_train, epochs=1, seed=0, batch_size=32, lr=1e-2, num_threads=1)
    assert torch.get_num_threads() == before
