"""User-facing errors of the command-line pipeline.

A :class:`UsageError` is something the user can fix (a missing file, an unknown name). A missing
optional extra raises :class:`requant_plugin.deps.MissingDependency` (through the one extras
table of :mod:`requant_plugin.deps`); the CLI treats both alike: it prints the message on one
line and exits with status 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from ..deps import EXTRAS, MissingDependency, install_hint
from ..deps import require as require_module

__all__ = ["EXTRA_FOR_MODULE", "USER_ERRORS", "MissingDependency", "UsageError", "install_hint", "require_module"]

#: The pip extra that provides each optional import (the one table, :data:`requant_plugin.deps.EXTRAS`).
EXTRA_FOR_MODULE = EXTRAS


class UsageError(Exception):
    """A problem with the user's input or environment, reported as one line (exit status 2)."""


#: The exceptions the CLI reports as one line with exit status 2.
USER_ERRORS: tuple[type[Exception], ...] = (UsageError, MissingDependency)
