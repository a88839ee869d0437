"""A tiny Conv-BN-ReLU classifier that trains in seconds on CPU (8x8 digits, 28x28 Fashion-MNIST).

Layout: ``conv1 -> bn1 -> relu1 -> conv2 (stride 2) -> bn2 -> relu2 -> pool -> flatten -> linear``.
There is no residual connection and no tensor-dependent control flow, so the model traces with
``torch.fx`` and exports with ``torch.export`` like the CIFAR ResNets.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SmallCNN", "train_small_cnn"]


class SmallCNN(nn.Module):
    """Two Conv-BN-ReLU stages, an average pool to at most ~4x4 and a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 16) -> None:
        """Build the network for square ``image_size`` inputs with ``in_channels`` channels."""
        super().__init__()
        if min(in_channels, num_classes, image_size, width) < 1:
            raise ValueError("in_channels, num_classes, image_size and width must be positive")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU()
        reduced = (image_size + 1) // 2
        kernel = max(1, reduced // 4)
        self.pool: nn.Module = nn.AvgPool2d(kernel) if kernel > 1 else nn.Identity()
        pooled = reduced // kernel
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(2 * width * pooled * pooled, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[N, C, S, S]`` images to ``[N, num_classes]`` logits."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        result: Tensor = self.linear(self.flatten(self.pool(out)))
        return result


def train_small_cnn(
    x_train: Tensor,
    y_train: Tensor,
    *,
    epochs: int = 15,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-2,
    num_classes: int | None = None,
    num_threads: int | None = 1,
) -> SmallCNN:
    """Train a :class:`SmallCNN` with Adam (cosine-decayed lr); returns it in eval mode.

    Initialisation and batch order depend only on ``seed`` (the global RNG state is left
    untouched), so repeated calls give the same weights on the same machine.

    ``num_threads`` temporarily sets torch's intra-op thread count while training (restored
    afterwards); the default of 1 is fastest for this tiny network and avoids the large slowdown
    that multi-threaded kernels suffer on a busy machine. ``None`` keeps the current setting.
    """
    if x_train.dim() != 4 or x_train.shape[2] != x_train.shape[3]:
        raise ValueError(f"x_train must be [N, C, S, S], got {tuple(x_train.shape)}")
    if y_train.shape != (x_train.shape[0],):
        raise ValueError(f"y_train must be [{x_train.shape[0]}], got {tuple(y_train.shape)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be positive")
    classes = num_classes if num_classes is not None else int(y_train.max().item()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(int(x_train.shape[1]), classes, int(x_train.shape[2]))
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        _fit(model, x_train, y_train.long(), epochs=epochs, seed=seed, batch_size=batch_size, lr=lr)
    finally:
        torch.set_num_threads(previous_threads)
    return model.eval()


def _fit(
    model: nn.Module,
    x_train: Tensor,
    targets: Tensor,
    *,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
) -> None:
    """Adam + cosine schedule + cross-entropy over seeded mini-batches."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-x_train.shape[0] // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=generator)
        for start in range(0, x_train.shape[0], batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), targets[idx])
            loss.backward()
            optimizer.step()
            scheduler.step()
