"""Static check that code Slicer 5.6/5.8 imports (Python 3.9.10, numpy 1.26) uses nothing newer.

Parsed with ``ast.parse(feature_version=(3, 9))`` (``match``, ``except*``, ``type`` statements are refused),
plus what parses on 3.9 but fails at run time there: ``X | Y`` of types evaluated outside annotations,
annotations without ``from __future__ import annotations``, and a list of 3.10+ stdlib APIs and
numpy 2.x-only names (Slicer 5.6/5.8 ship numpy 1.26; 5.10 ships 2.0.2, so 1.x-only names are
refused as well).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What Slicer imports: the module, and the engine except the browser app (trame-slicer is not part of
# Slicer). The CLI stays in: the module's "Learn from corrections" runs `python -m MuscleSAMLib.cli train`
# with Slicer's own Python.
SLICER_CODE = ("MuscleSAM", "MuscleSAMLib")
NOT_IN_SLICER = ("MuscleSAMLib/web/",)

TYPE_NAMES = {"int", "float", "str", "bytes", "bool", "list", "dict", "tuple", "set", "frozenset", "type",
              "object", "Path", "None", "complex"}
NEW_MODULES = {"tomllib": "3.11", "zoneinfo": "3.9 ok", "graphlib": "3.9 ok"}
NEW_ATTRIBUTES = {  # module -> names added after 3.9
    "itertools": {"pairwise": "3.10", "batched": "3.12"},
    "typing": {n: "3.10+" for n in ("TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "Self", "LiteralString",
                                    "Never", "assert_never", "reveal_type", "Required", "NotRequired", "Unpack",
                                    "TypeVarTuple", "dataclass_transform", "override", "is_typeddict", "TypeIs")},
    "dataclasses": {"KW_ONLY": "3.10"},
    "datetime": {"UTC": "3.11"},
    "enum": {"StrEnum": "3.11", "verify": "3.11", "ReprEnum": "3.11"},
    "hashlib": {"file_digest": "3.11"},
    "contextlib": {"chdir": "3.11", "aclosing": "3.10"},
    "asyncio": {"TaskGroup": "3.11", "timeout": "3.11"},
    "sys": {"stdlib_module_names": "3.10", "orig_argv": "3.10"},
    "math": {"cbrt": "3.11", "exp2": "3.11", "sumprod": "3.12"},
    "os": {"EFD_CLOEXEC": "3.10"},
    "inspect": {"get_annotations": "3.10"},
    "np": {n: "numpy 2.0" for n in ("isdtype", "unique_values", "unique_counts", "unique_inverse", "unique_all",
                                    "concat", "permute_dims", "astype", "matrix_transpose", "cumulative_sum",
                                    "cumulative_prod", "trapezoid", "vecdot", "pow", "acos", "asin", "atan",
                                    "atan2", "acosh", "asinh", "atanh", "bitwise_count", "long", "ulong",
                                    "bitwise_left_shift", "bitwise_right_shift", "bitwise_invert")}
    | {n: "removed in numpy 2.0 (Slicer 5.10)" for n in ("float_", "complex_", "product", "cumproduct", "alltrue",
                                                         "sometrue", "row_stack", "trapz", "in1d", "NaN", "Inf",
                                                         "NINF", "PINF", "infty", "asfarray", "find_common_type",
                                                         "cast", "msort", "round_", "unicode_", "string_",
                                                         "issubclass_", "mat")},
}
NEW_BUILTINS = {"aiter": "3.10", "anext": "3.10", "ExceptionGroup": "3.11", "BaseExceptionGroup": "3.11",
                "EncodingWarning": "3.10"}
NEW_KEYWORDS = {  # callable name -> keywords added after 3.9
    "zip": {"strict": "3.10"}, "dataclass": {"slots": "3.10", "kw_only": "3.10", "match_args": "3.10"},
    "field": {"kw_only": "3.10"}, "rmtree": {"onexc": "3.12"}, "bisect": {"key": "3.10"},
    "bisect_left": {"key": "3.10"}, "bisect_right": {"key": "3.10"}, "insort": {"key": "3.10"},
    "asarray": {"copy": "numpy 2.0"},
}
NEW_METHODS = {"hardlink_to": "3.10", "bit_count": "3.10"}


def slicer_files(root: Path = ROOT) -> list[Path]:
    """Every .py file Slicer may import (see SLICER_CODE / NOT_IN_SLICER)."""
    files = []
    for top in SLICER_CODE:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if not any(rel.startswith(skip) for skip in NOT_IN_SLICER):
                files.append(path)
    return files


def _name(node: ast.AST) -> str:
    return getattr(node, "id", getattr(node, "attr", ""))


def _is_type_expr(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES or node.id[:1].isupper() and node.id not in ("True", "False")
    if isinstance(node, ast.Subscript):
        return _name(node.value) in TYPE_NAMES or _name(node.value)[:1].isupper()
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_type_expr(node.left) and _is_type_expr(node.right)
    return False


def _annotation_nodes(tree: ast.AST) -> set:
    """ids of every node inside an annotation (where `X | Y` is fine under the future import)."""
    inside = set()
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            anns += [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs if x.annotation]
            anns += [x.annotation for x in (a.vararg, a.kwarg) if x is not None and x.annotation]
            anns += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            anns.append(node.annotation)
        for ann in anns:
            inside.update(id(n) for n in ast.walk(ann))
    return inside


def problems_in_source(source: str, where: str) -> list[str]:
    """Every construct in ``source`` that Python 3.9 / numpy 1.26 would refuse, as 'file:line: what'."""
    try:
        tree = ast.parse(source, where, feature_version=(3, 9))
    except SyntaxError as exc:
        return [f"{where}:{exc.lineno}: syntax newer than Python 3.9 ({exc.msg})"]
    out = []
    has_future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                     any(a.name == "annotations" for a in n.names) for n in tree.body)
    annotated = _annotation_nodes(tree)
    if annotated and not has_future:
        out.append(f"{where}:1: annotations without `from __future__ import annotations` (evaluated at import on 3.9)")
    imported_as = {}  # local alias -> module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                imported_as[a.asname or a.name] = a.name
                if a.name in NEW_MODULES and "ok" not in NEW_MODULES[a.name]:
                    out.append(f"{where}:{node.lineno}: module {a.name} is Python {NEW_MODULES[a.name]}+")
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = "np" if node.module == "numpy" else node.module
            for a in node.names:
                why = NEW_ATTRIBUTES.get(mod, {}).get(a.name)
                if why:
                    out.append(f"{where}:{node.lineno}: {node.module}.{a.name} is {why}")
            if node.module in NEW_MODULES and "ok" not in NEW_MODULES[node.module]:
                out.append(f"{where}:{node.lineno}: module {node.module} is Python {NEW_MODULES[node.module]}+")
    numpy_aliases = {k for k, v in imported_as.items() if v == "numpy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in annotated \
                and _is_type_expr(node.left) and _is_type_expr(node.right):
            out.append(f"{where}:{node.lineno}: `X | Y` of types evaluated at run time (Python 3.10+); use Union/tuple")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            mod = "np" if node.value.id in numpy_aliases else imported_as.get(node.value.id)
            why = NEW_ATTRIBUTES.get(mod or "", {}).get(node.attr)
            if why:
                out.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr} is {why}")
        if isinstance(node, ast.Name) and node.id in NEW_BUILTINS and isinstance(node.ctx, ast.Load):
            out.append(f"{where}:{node.lineno}: builtin {node.id} is Python {NEW_BUILTINS[node.id]}+")
        if isinstance(node, ast.Call):
            name = _name(node.func)
            for kw in node.keywords:
                why = NEW_KEYWORDS.get(name, {}).get(kw.arg or "")
                if why:
                    out.append(f"{where}:{node.lineno}: {name}({kw.arg}=...) is {why}")
            if name in NEW_METHODS:
                out.append(f"{where}:{node.lineno}: .{name}() is Python {NEW_METHODS[name]}+")
    return out


def problems(files: list[Path] | None = None) -> list[str]:
    """Problems in every file Slicer imports."""
    found = []
    for path in files if files is not None else slicer_files():
        found += problems_in_source(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
                                    if path.is_relative_to(ROOT) else str(path))
    return found
