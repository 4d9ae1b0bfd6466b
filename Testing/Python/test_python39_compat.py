"""Code that Slicer 5.6/5.8 imports must run on their Python 3.9.10 and numpy 1.26 (py39_rules).

The real run is scripts/test_py39.sh (engine and learning tests in a Python 3.9 venv); this static check
runs in the normal suite and names the file and line of anything newer.
"""

from __future__ import annotations

import pytest

from py39_rules import problems, problems_in_source, slicer_files


def test_code_slicer_imports_uses_nothing_newer_than_python_39_and_numpy_126():
    files = slicer_files()
    assert any(f.name == "MuscleSAM.py" for f in files) and any(f.name == "errors.py" for f in files)
    assert problems(files) == []


@pytest.mark.parametrize("source, expected", [
    ("class E(Exception):\n    def __init__(self, errno: int | None = None):\n        pass\n", "without `from __future__"),
    ("from __future__ import annotations\nmatch x:\n    case 1:\n        pass\n", "syntax newer than Python 3.9"),
    ("from __future__ import annotations\nOptionalPath = str | None\n", "`X | Y` of types"),
    ("from __future__ import annotations\nok = isinstance(v, int | float)\n", "`X | Y` of types"),
    ("from __future__ import annotations\npairs = list(zip(a, b, strict=True))\n", "zip(strict=...)"),
    ("from __future__ import annotations\nfrom dataclasses import dataclass\n@dataclass(slots=True)\nclass A:\n    x: int\n",
     "dataclass(slots=...)"),
    ("from __future__ import annotations\nimport itertools\nitertools.pairwise([1, 2])\n", "itertools.pairwise"),
    ("from __future__ import annotations\nfrom typing import TypeAlias\n", "typing.TypeAlias"),
    ("from __future__ import annotations\nimport tomllib\n", "module tomllib"),
    ("from __future__ import annotations\nimport numpy as np\nnp.trapezoid([1.0])\n", "numpy 2.0"),
    ("from __future__ import annotations\nimport numpy as np\nnp.asarray(a, copy=False)\n", "asarray(copy=...)"),
    ("from __future__ import annotations\nimport numpy as np\nx = np.float_(1)\n", "removed in numpy 2.0"),
])
def test_each_construct_newer_than_39_is_named_with_its_line(source, expected):
    found = problems_in_source(source, "m.py")
    assert any(expected in p and p.startswith("m.py:") for p in found), found


def test_annotations_and_flags_are_fine():
    source = ("from __future__ import annotations\nimport os\nflags = os.O_CREAT | os.O_EXCL\n"
              "def f(x: int | None = None) -> list[str] | None:\n    y: dict[str, int] | None = None\n    return None\n")
    assert problems_in_source(source, "m.py") == []
