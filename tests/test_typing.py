"""The typed API: every public parameter and return of fnn is annotated, and the wheel says so (py.typed).

The counter is ``scripts/annotations.py``; the type checker itself (mypy over fnn/) runs in CI.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _counter():
    spec = importlib.util.spec_from_file_location("fnn_annotations", REPO / "scripts" / "annotations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_parameter_and_return_is_annotated():
    missing, total = _counter().missing_annotations("fnn")
    assert total > 900  # the walk reached the whole package (layers, optim, train, data, ...)
    assert missing == []


def test_the_counter_finds_what_is_missing(tmp_path, monkeypatch):
    """The guard's own oracle: a tiny package with known gaps, each reported once."""
    pkg = tmp_path / "typedpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from typedpkg.sub.mod import Thing, helper\n__all__ = ['Thing', 'helper']\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(
        "from typing import NamedTuple\n"
        "def helper(a: int, b, *args: int, c: str = '', **kw) -> int: return a\n"
        "def _private(x): return x\n"
        "def fully(x: int) -> int: return x\n"
        "class Thing:\n"
        "    def __init__(self, n: int, m): self.n = n\n"
        "    def method(self, k: int): return k\n"
        "    def _hidden(self, z): return z\n"
        "class Pair(NamedTuple):\n"
        "    a: int\n"
        "    def total(self) -> int: return self.a\n")
    (pkg / "sub" / "_internal.py").write_text("def ignored(x): return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    missing, total = _counter().missing_annotations("typedpkg")
    assert sorted(missing) == sorted([
        "typedpkg.sub.mod.helper: parameter b", "typedpkg.sub.mod.helper: parameter kw",
        "typedpkg.sub.mod.Thing.__init__: parameter m", "typedpkg.sub.mod.Thing.method: return",
    ])
    # helper: a, b, args, c, kw + return; __init__: n, m; method: k + return; fully: x + return; total: return
    assert total == 6 + 2 + 2 + 2 + 1
    for name in [m for m in sys.modules if m.split(".")[0] == "typedpkg"]:
        monkeypatch.delitem(sys.modules, name)


def test_the_wheel_ships_py_typed():
    tomllib = pytest.importorskip("tomllib")
    assert (REPO / "fnn" / "py.typed").is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["fnn"]
    assert any(dep.startswith("mypy") for dep in config["project"]["optional-dependencies"]["dev"])


def test_type_aliases_are_importable_and_documented():
    import fnn.typing as t

    for name in t.__all__:
        assert hasattr(t, name), name
    assert set(t.__all__) >= {"Array", "ArrayLike", "PyTree", "Key", "Shape", "Data", "LearningRate"}
