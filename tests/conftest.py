"""Suite-wide fixtures: the weight-tensor variants every weight-reading entry point must accept."""

from __future__ import annotations

import pytest

from refs.variants import VARIANTS


@pytest.fixture(params=VARIANTS)
def weight_variant(request: pytest.FixtureRequest) -> str:
    """Each kind of weight tensor of :mod:`refs.variants` in turn (use with ``make_variant``)."""
    return str(request.param)
