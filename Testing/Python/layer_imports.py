"""Static import graph of the repository (ast; nothing is imported): who imports what, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, NamedTuple

ROOT = Path(__file__).resolve().parents[2]


class Import(NamedTuple):
    """One import statement's target: ``module`` (absolute) and, for ``from m import n``, the name ``n``."""

    source: str  # file, relative to the repository root
    line: int
    module: str
    name: str | None


def module_name(path: Path) -> str:
    """Dotted module name of a file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str | None = None) -> Iterator[Import]:
    """Every import in ``path`` (module level and inside functions), relative ones made absolute.

    ``module``: the file's dotted name when it does not lie in the repository (tests of this reader).
    """
    rel = str(path.relative_to(ROOT)) if module is None else str(path)
    mod = module or module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(rel, node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield Import(rel, node.lineno, target, alias.name)


def python_files(*folders: str) -> list[Path]:
    """The .py files under ``folders`` (relative to the repository root)."""
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def reaches(imp: Import, package: str) -> bool:
    """True when ``imp`` imports ``package`` or anything inside it (``from a import b`` counts as a.b too)."""
    full = f"{imp.module}.{imp.name}" if imp.name else imp.module
    return any(m == package or m.startswith(package + ".") for m in (imp.module, full))
