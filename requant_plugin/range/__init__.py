"""REQuant on one torch tensor: ``estimate_range(w, spec_or_bits, **options) -> RangeEstimate``.

* :mod:`.spec`: :class:`RangeSpec`, the frozen, validated settings, and :func:`range_spec`, the
  one translation of keyword options (legacy ``bits`` positional, ``per_channel``/``ch_axis``).
* :mod:`.estimate`: :func:`estimate_range`, the torch adapter over :mod:`requant_plugin.core`.
* :mod:`.result`: :class:`RangeEstimate`, the chosen grid and how to apply it to a tensor.
* :mod:`.rows`: a tensor as the 2-D NumPy rows the core searches.
* :mod:`.threads`: the core's row blocks run on torch's intra-op threads.
"""

from ..core import PowerTransform
from .estimate import estimate_range
from .result import RangeEstimate
from .rows import rows_of
from .spec import RangeSpec, range_spec

__all__ = ["PowerTransform", "RangeEstimate", "RangeSpec", "estimate_range", "range_spec", "rows_of"]
