"""The two documented imports (:mod:`requant_plugin.lightning` and
:mod:`requant_plugin.pytorch_lightning`): one class name and checkpoint key in both flavours, a
Lightning-free implementation, and each flavour importable without the other package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from refs import litmods

from requant_plugin.lightning import REQuantCalibration
from requant_plugin.pytorch_lightning import REQuantCalibration as PLREQuantCalibration


def test_same_class_name_in_both_flavours():
    import lightning.pytorch as L
    import pytorch_lightning as PL

    assert REQuantCalibration.__name__ == PLREQuantCalibration.__name__ == "REQuantCalibration"
    assert isinstance(REQuantCalibration(), L.Callback) and not isinstance(REQuantCalibration(), PL.Callback)
    assert isinstance(PLREQuantCalibration(), PL.Callback)
    assert REQuantCalibration().state_key == PLREQuantCalibration().state_key


def test_core_does_not_import_lightning():
    """No import of lightning / pytorch_lightning anywhere in the callback's modules (static check):
    every ``requant_plugin/lightning/*.py``; the flavours bind their ``Callback`` by name at run time."""
    import ast

    import requant_plugin.lightning as package
    import requant_plugin.lightning.callback as core

    files = sorted(Path(package.__file__).parent.glob("*.py"))
    assert Path(core.__file__) in files and len(files) > 1
    for path in files:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert names, path.name
        assert not [m for m in names if m.split(".")[0] in ("lightning", "pytorch_lightning")], path.name


_WITHOUT = """
import sys
sys.modules[{blocked!r}] = None  # as if not installed: importing it raises ImportError
import importlib
flavour = importlib.import_module({flavour!r})
base = importlib.import_module({base!r})
cb = flavour.REQuantCalibration("model", mode="fx")
assert isinstance(cb, base.Callback) and cb.state_key == "REQuantCalibration"
try:
    importlib.import_module({other!r}).REQuantCalibration
except ImportError as exc:
    print("MISSING:", type(exc).__name__, exc)
else:
    raise AssertionError("the other flavour imported without its package")
"""


@pytest.mark.parametrize(("flavour", "blocked"), [("lightning", "pytorch_lightning"),
                                                  ("pytorch_lightning", "lightning")])
def test_each_flavour_imports_without_the_other_package(flavour, blocked):
    """``requant_plugin.<flavour>`` works when only its own Lightning package is importable; the
    other flavour raises ``MissingDependency`` (an ImportError) with the install command."""
    other = {"lightning": "pytorch_lightning", "pytorch_lightning": "lightning"}[flavour]
    code = _WITHOUT.format(blocked=blocked, flavour=litmods.PLUGIN[flavour],
                           base=litmods.FLAVOURS[flavour], other=litmods.PLUGIN[other])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=litmods.child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MISSING: MissingDependency" in proc.stdout
    extra = {"lightning": "pytorch-lightning", "pytorch_lightning": "lightning"}[flavour]
    assert f"pip install 'requant-plugin[{extra}]'" in proc.stdout


def test_package_attributes():
    """``REQuantCalibration`` is made once (pickles by name); unknown names raise AttributeError."""
    import pickle

    import requant_plugin.lightning as package

    assert package.REQuantCalibration is REQuantCalibration
    assert REQuantCalibration.__module__ == "requant_plugin.lightning"
    assert type(pickle.loads(pickle.dumps(REQuantCalibration("model")))) is REQuantCalibration
    assert type(pickle.loads(pickle.dumps(PLREQuantCalibration("model")))) is PLREQuantCalibration
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        package.nothing  # noqa: B018
