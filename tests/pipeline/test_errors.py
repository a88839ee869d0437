"""pipeline.errors: user errors, and missing extras through the one table of requant_plugin.deps."""

from __future__ import annotations

import sys

import pytest

from requant_plugin import deps
from requant_plugin.pipeline.errors import EXTRA_FOR_MODULE, USER_ERRORS, UsageError, install_hint, require_module


def test_missing_extra_is_a_user_error_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(deps.MissingDependency, match=r"pip install 'requant-plugin\[onnx\]'") as info:
        require_module("onnxruntime", "--export (ONNX for TensorRT)")
    assert isinstance(info.value, USER_ERRORS) and "--export" in str(info.value)
    assert issubclass(UsageError, USER_ERRORS)
    assert EXTRA_FOR_MODULE is deps.EXTRAS and install_hint("matplotlib") == "pip install 'requant-plugin[plots]'"
