"""Each package has one way in, and its surface is what it claims (after httpx's test_exported_members).

- A package's ``__all__`` is exactly its public, non-module attributes, and
  each name in it resolves.
- Code in one package reaches another only through that package's surface:
  ``from tradetree.core import RedisStore``, never ``tradetree.core.store``,
  and never a module object pulled through a package. Inside a package,
  modules import each other freely. Tests and benchmarks may reach inside.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import tradetree

ROOT = Path(tradetree.__file__).resolve().parent.parent


def _packages() -> list[str]:
    out = ["tradetree"]
    for info in pkgutil.walk_packages(tradetree.__path__, "tradetree."):
        if info.ispkg:
            out.append(info.name)
    return sorted(out)


def _modules() -> list[tuple[str, Path, bool]]:
    out = [("tradetree", Path(tradetree.__file__), True)]
    for info in pkgutil.walk_packages(tradetree.__path__, "tradetree."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None, info.name
        out.append((info.name, Path(spec.origin), info.ispkg))
    return out


PACKAGES = [p for p in _packages() if p != "tradetree"]


def _owner(module: str, is_pkg: bool) -> str:
    """The package a module belongs to (a package owns itself)."""
    return module if is_pkg else module.rpartition(".")[0]


def _top(module: str) -> str:
    """``tradetree.core.store`` -> ``tradetree.core``; app modules (``tradetree.cli``) are their own."""
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("name", PACKAGES)
def test_the_surface_is_what_it_claims(name):
    package = importlib.import_module(name)
    declared = getattr(package, "__all__", None)
    assert declared is not None, f"{name} declares no __all__"
    assert len(declared) == len(set(declared)), f"{name}.__all__ lists a name twice"
    for member in declared:
        assert hasattr(package, member), f"{name}.__all__ names {member!r}, which {name} does not have"
    public = {m for m in dir(package) if not m.startswith("_") and not inspect.ismodule(getattr(package, m))}
    public -= {"annotations"}  # `from __future__ import annotations`
    assert sorted(public - set(declared)) == [], f"{name} exposes names its __all__ does not list"


def _cross_package_imports():
    for module, path, _ in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("tradetree."):
                yield module, path, node.lineno, node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("tradetree."):
                        yield module, path, node.lineno, alias.name, []


def test_other_packages_are_reached_through_their_surface():
    kinds = {m: p for m, _, p in _modules()}
    wrong = []
    for module, path, line, target, names in _cross_package_imports():
        if _top(target) == _top(module):
            continue  # inside one package, modules import each other
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
        if target not in kinds:
            wrong.append(f"{where}: {target} is not a tradetree module")
        elif not kinds[target] and _top(target) != target:
            wrong.append(f"{where}: imports module {target}; import from {_owner(target, False)}")
        else:
            package = importlib.import_module(target)
            for n in names:
                if inspect.ismodule(getattr(package, n, None)) and kinds.get(f"{target}.{n}") is False:
                    wrong.append(f"{where}: pulls module {target}.{n} through its package")
    assert wrong == [], "\n".join(wrong)
