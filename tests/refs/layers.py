"""A seeded layer problem for the feedback-rounding tests: a weight and the Gram matrix of ReLU-like inputs."""

from __future__ import annotations

import numpy as np
import torch


def relu_layer(seed: int, c: int = 6, n: int = 10, groups: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    """A ``(c, n)`` weight with channel scales in ``[0, 1)`` and the Gram matrix ``X^T X / 400`` of 400 rectified
    normal rows plus noise (``(groups, n, n)``, one per group, when ``groups > 1``)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, n, generator=g) * torch.rand(c, 1, generator=g)
    grams = []
    for _ in range(groups):
        x = torch.relu(torch.randn(400, n, generator=g)).double() + 0.1 * torch.randn(400, n, generator=g).double()
        grams.append((x.T @ x / 400).numpy())
    return w, (grams[0] if groups == 1 else np.stack(grams))
