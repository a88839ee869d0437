"""The option names core's callers imported before :mod:`requant_plugin.options` existed.

Each is a thin alias over the one vocabulary (nothing is declared here): the tuples list the
enum's values and the ``check_*`` functions return the validated value as a plain ``str``
(``ValueError`` listing the valid values otherwise). New code uses :mod:`requant_plugin.options`.
"""

from __future__ import annotations

from typing import Any

from ..options import MAX_BITS, MIN_BITS, Convention, LossSpace, Search, Space, check_bits

__all__ = [
    "LOSS_SPACES", "MAX_BITS", "MIN_BITS", "SEARCHES", "SPACES", "SYMMETRIC_CONVENTIONS",
    "check_bits", "check_search", "check_space",
]

SPACES: tuple[str, ...] = tuple(Space.values())
SEARCHES: tuple[str, ...] = tuple(Search.values())
LOSS_SPACES: tuple[str, ...] = tuple(LossSpace.values())
SYMMETRIC_CONVENTIONS: tuple[str, ...] = tuple(Convention.values())


def check_space(space: Any) -> str:
    """``space`` as a plain string if it names a :class:`~requant_plugin.options.Space`."""
    return Space.parse(space).value


def check_search(search: Any) -> str:
    """``search`` as a plain string if it names a :class:`~requant_plugin.options.Search`."""
    return Search.parse(search).value
