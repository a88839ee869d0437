"""Suite-wide fixtures: the weight-tensor variants every weight-reading entry point must accept, and
isolation of torch's global quantized engine between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from refs.variants import VARIANTS


@pytest.fixture(params=VARIANTS)
def weight_variant(request: pytest.FixtureRequest) -> str:
    """Each kind of weight tensor of :mod:`refs.variants` in turn (use with ``make_variant``)."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _restore_quantized_engine() -> Iterator[None]:
    """Tests (and ``prepare_calibrated``) set ``torch.backends.quantized.engine``; put it back, so no
    test's outcome depends on which test ran before it on the same worker."""
    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine
