"""torchao is an optional extra: only ``requant_plugin.pt2e`` imports it (fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_core_modules_do_not_import_torchao() -> None:
    res = _run("""
        import sys
        import requant_plugin, requant_plugin.observers, requant_plugin.qconfig, requant_plugin.refine
        import requant_plugin.calib, requant_plugin.observers.flows
        requant_plugin.get_requant_qconfig_mapping(weight_bits=4, act_bits=8)
        print(sorted(m for m in sys.modules if m == "torchao" or m.startswith("torchao.")))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_pt2e_without_torchao_names_the_extra() -> None:
    res = _run("""
        import sys
        sys.modules["torchao"] = None  # behaves as if torchao were not installed
        try:
            import requant_plugin.pt2e
        except ImportError as exc:
            print("IMPORTERROR", exc)
        import requant_plugin.observers  # the torch.ao flow still works
        print("observers ok")
    """)
    assert res.returncode == 0, res.stderr
    assert "IMPORTERROR" in res.stdout
    assert "pip install 'requant-plugin[pt2e]'" in res.stdout
    assert "observers ok" in res.stdout
