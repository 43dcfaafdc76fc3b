"""The lint step that fails on an import loop (tools/import_loops.py), on a throwaway package with loops that hide
behind ``if TYPE_CHECKING:`` and inside a function, and on this repository."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("grimp")
TOOL = Path(__file__).resolve().parent.parent / "tools" / "import_loops.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_loops", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loops_behind_type_checking_and_in_functions_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    pkg = tmp_path / "loopy"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loopy.b import B\n",
        "b.py": "from loopy import c\nB = 1\n",
        "c.py": "def f() -> None:\n    from loopy import a\n",  # a → b → c → a
        "d.py": "from loopy import b\n",  # imports into the loop, not part of it
        "sub/__init__.py": "",
        "sub/x.py": "from loopy.sub import y\n",
        "sub/y.py": "import loopy.sub.x\n",  # x ↔ y, a package deeper
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    tool = _tool()
    assert tool.find_loops(["loopy"]) == [["loopy.a", "loopy.b", "loopy.c"], ["loopy.sub.x", "loopy.sub.y"]]
    monkeypatch.setattr(tool, "KNOWN_LOOPS", {frozenset({"loopy.sub.x", "loopy.sub.y"})})
    assert tool.main(["loopy"]) == 1
    out = capsys.readouterr().out
    assert "import loop: loopy.a → loopy.b → loopy.c → loopy.a" in out
    assert "import loop (known, being removed): loopy.sub.x → loopy.sub.y → loopy.sub.x" in out
    (pkg / "a.py").write_text("")
    (pkg / "sub" / "y.py").write_text("")
    for name in [m for m in sys.modules if m == "loopy" or m.startswith("loopy.")]:
        monkeypatch.delitem(sys.modules, name)
    assert tool.main(["loopy"]) == 1  # no loop left, but a known one is gone: its entry must go too
    assert "no longer a loop: loopy.sub.x ↔ loopy.sub.y: remove it from KNOWN_LOOPS" in capsys.readouterr().out


def test_this_repository_has_no_import_loop() -> None:
    assert _tool().main([]) == 0
