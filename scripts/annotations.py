"""Count the public parameters and returns of the ``fnn`` package that have no type annotation.

Walks every public module of ``fnn`` (no leading underscore in its dotted name), and in each
the names it lists in ``__all__`` (without one: the public names it defines itself):
functions, the public methods (and ``__init__``/``__call__``) of the classes fnn defines, and
the ``value``/``backward`` functions of module-level ``Loss`` objects (``losses.mse.value``
is how a user calls a loss). A parameter counts as annotated when its signature has an
annotation (``self``/``cls`` are exempt; ``__init__`` has no return to annotate). Prints each
missing annotation and a summary; ``tests/test_typing.py`` asserts that none is missing.

    python scripts/annotations.py
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any


def public_modules(package: str = "fnn") -> list[ModuleType]:
    """``package`` and every submodule whose dotted name has no part starting with ``_``."""
    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def _own(obj: Any, package: str) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] == package


def public_callables(package: str = "fnn") -> Iterator[tuple[str, Callable[..., Any]]]:
    """(qualified name, function) for each public function and method of ``package``, once each."""
    seen: set[int] = set()
    for module in public_modules(package):
        listed = getattr(module, "__all__", None)
        names = listed if listed is not None else [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name, None)
            if obj is None or id(obj) in seen:
                continue
            if listed is None and inspect.isfunction(obj) | inspect.isclass(obj) \
                    and obj.__module__ != module.__name__:
                continue  # imported here, not defined: counted where it is defined or exported
            if inspect.isfunction(obj) and _own(obj, package):
                seen.add(id(obj))
                yield f"{obj.__module__}.{obj.__qualname__}", obj
            elif inspect.isclass(obj) and _own(obj, package):
                seen.add(id(obj))
                for attr, member in vars(obj).items():
                    func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                    if not inspect.isfunction(func) or not _own(func, package):
                        continue  # NamedTuple's generated methods are typed from the fields
                    if attr.startswith("_") and attr not in ("__init__", "__call__"):
                        continue
                    yield f"{obj.__module__}.{func.__qualname__}", func
            elif type(obj).__name__ == "Loss" and _own(type(obj), package):
                seen.add(id(obj))
                for part in ("value", "backward"):
                    func = getattr(obj, part)
                    if inspect.isfunction(func) and id(func) not in seen:
                        seen.add(id(func))
                        yield f"{module.__name__}.{name}.{part}", func


def missing_annotations(package: str = "fnn") -> tuple[list[str], int]:
    """(list of 'qualname: what' for each missing annotation, number of annotation slots checked)."""
    missing: list[str] = []
    total = 0
    for qualname, func in public_callables(package):
        sig = inspect.signature(func)
        for i, (pname, param) in enumerate(sig.parameters.items()):
            if i == 0 and pname in ("self", "cls"):
                continue
            total += 1
            if param.annotation is inspect.Parameter.empty:
                missing.append(f"{qualname}: parameter {pname}")
        if func.__name__ != "__init__":
            total += 1
            if sig.return_annotation is inspect.Signature.empty:
                missing.append(f"{qualname}: return")
    return missing, total


def main() -> int:
    missing, total = missing_annotations()
    for line in missing:
        print(line)
    print(f"{total - len(missing)} of {total} public parameters and returns annotated; {len(missing)} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fnn, not an installed one
    sys.exit(main())
