"""The option names core exported before ``requant_plugin.options``: thin aliases of the one vocabulary."""

from __future__ import annotations

import pytest

from requant_plugin.core import LOSS_SPACES, SEARCHES, SPACES, check_bits, check_space
from requant_plugin.core.compat import MAX_BITS, MIN_BITS, SYMMETRIC_CONVENTIONS
from requant_plugin.core.search import check_search
from requant_plugin.options import Convention, LossSpace, Search, Space


def test_tuples_list_the_enum_values() -> None:
    assert SPACES == ("uniform", "sqrt") == tuple(Space.values())
    assert SEARCHES == ("golden", "grid", "minmax") == tuple(Search.values())
    assert LOSS_SPACES == ("original", "transformed") == tuple(LossSpace.values())
    assert SYMMETRIC_CONVENTIONS == ("torch", "tensorrt", "narrow") == tuple(Convention.values())
    assert (MIN_BITS, MAX_BITS) == (2, 8)


def test_checks_return_plain_strings_and_list_valid_values() -> None:
    assert check_space("sqrt") == "sqrt" and type(check_space(Space.SQRT)) is str
    assert check_search("grid") == "grid" and type(check_search(Search.GRID)) is str
    assert check_bits(4) == 4
    with pytest.raises(ValueError, match=r"unknown space 'log': valid values are \['uniform', 'sqrt'\]"):
        check_space("log")
    with pytest.raises(ValueError, match=r"unknown search 'bisect': valid values are \['golden', 'grid', 'minmax'\]"):
        check_search("bisect")
    with pytest.raises(ValueError, match="2, 3, 4, 5, 6, 7, 8"):
        check_bits(9)
