"""DESIGN.md layers: the core imports no Slicer, Qt or trame; imports point down only; front ends use one door.

* The core engine (``engine``, ``models`` and the base modules beside them) never imports the scene
  bridge, the front ends (web, cli), the headless use cases (``pipelines``) or the orchestration above them (``corrections``, ``training``).
* Front ends (the desktop module and the web app) reach the scene bridge only through its package
  door: ``MuscleSAMLogic`` and its result types (``scene_bridge.__all__``), plus ``dependencies``
  (the desktop module's standard-library dependency check). What the web app still reaches past the
  door is listed in :data:`WEB_REACH_THROUGH` (to be moved behind ``MuscleSAMLogic``); the list may only shrink.
* Importing the engine draws nothing: matplotlib's pyplot is not imported (and so no backend is chosen)
  until a figure is drawn, and drawing one does not import it either.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from layer_imports import imports_of, module_name, python_files, reaches

ROOT = Path(__file__).resolve().parents[2]
CORE = ["MuscleSAMLib.volumes", "MuscleSAMLib.intensity", "MuscleSAMLib.slice_geometry", "MuscleSAMLib.metrics",
        "MuscleSAMLib.phantoms", "MuscleSAMLib.models", "MuscleSAMLib.engine.segmenter", "MuscleSAMLib.engine.volume_run",
        "MuscleSAMLib.engine.propagation", "MuscleSAMLib.pipelines.segment", "MuscleSAMLib.pipelines.evaluate",
        "MuscleSAMLib.biomarkers", "MuscleSAMLib.outputs.bundle", "MuscleSAMLib.training.trainer",
        "MuscleSAMLib.cli.main", "MuscleSAMLib.scene_bridge"]


def test_core_engine_imports_without_slicer_qt_or_trame():
    code = (
        "import sys\n"
        "for name in ('slicer', 'qt', 'ctk', 'trame', 'trame_slicer', 'vtk'):\n"
        "    sys.modules[name] = None  # any import of these now fails\n"
        f"for mod in {CORE!r}:\n"
        "    __import__(mod)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported (a backend chosen) at import time'\n"
        "import numpy as np\n"
        "from MuscleSAMLib.outputs.overlay import write_overlay\n"
        "import tempfile, os\n"
        "z = np.zeros((1, 8, 8))\n"
        "write_overlay(z, z.astype('uint8'), z, [0], os.path.join(tempfile.mkdtemp(), 'o.png'), {})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'drawing a figure imported pyplot'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_every_bridge_name_the_desktop_module_imports_resolves():
    """MuscleSAM.py imports only from the bridge: each such name must exist (Slicer itself is not needed)."""
    import ast

    import MuscleSAMLib.scene_bridge as bridge

    tree = ast.parse((ROOT / "MuscleSAM" / "MuscleSAM.py").read_text())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and (node.module or "").startswith("MuscleSAMLib.scene_bridge") and node.module == "MuscleSAMLib.scene_bridge"
             for alias in node.names]
    assert names, "the module imports nothing from the bridge?"
    for name in names:
        assert hasattr(bridge, name) or (ROOT / "MuscleSAMLib" / "scene_bridge" / f"{name}.py").exists(), name


LOWER = ("MuscleSAMLib/engine", "MuscleSAMLib/models")
PIPELINES = ("MuscleSAMLib.pipelines",)
ABOVE_THE_CORE = ("MuscleSAMLib.scene_bridge", "MuscleSAMLib.web", "MuscleSAMLib.cli", "MuscleSAMLib.corrections",
                  "MuscleSAMLib.training") + PIPELINES


def _base_modules() -> list[Path]:
    """MuscleSAMLib's top-level modules except the pipelines (volumes, labels, paths, errors, ...)."""
    return [p for p in sorted((ROOT / "MuscleSAMLib").glob("*.py")) if module_name(p) not in PIPELINES]


def test_core_imports_point_down_only():
    """engine, models and the base never import the bridge, front ends, pipelines or orchestration."""
    files = python_files(*LOWER) + _base_modules()
    assert len(files) > 30
    upward = [f"{i.source}:{i.line} imports {i.module}{'.' + i.name if i.name else ''}"
              for f in files for i in imports_of(f) if any(reaches(i, up) for up in ABOVE_THE_CORE)]
    assert not upward, "the core imports upward:\n" + "\n".join(upward)


# (file, bridge submodule or name) the web app still imports past MuscleSAMLogic: move each behind the logic
WEB_REACH_THROUGH = {  # only the test-state report the browser tests read (routes.scene_report)
    ("MuscleSAMLib/web/routes.py", "segments"),
    ("MuscleSAMLib/web/routes.py", "mrml"),
    ("MuscleSAMLib/web/routes.py", "geometry"),
}


def _bridge_reach_through(files: list[Path]) -> set[tuple[str, str]]:
    """(file, what) for each import of the bridge that is not its door (``__all__`` names, ``dependencies``)."""
    import MuscleSAMLib.scene_bridge as bridge

    door = set(bridge.__all__) | {"dependencies"}
    found = set()
    for f in files:
        for i in imports_of(f):
            if i.module == "MuscleSAMLib.scene_bridge":
                if i.name not in door:
                    found.add((i.source, str(i.name)))
            elif i.module.startswith("MuscleSAMLib.scene_bridge."):
                sub = i.module.split(".")[2]
                if sub not in door:
                    found.add((i.source, sub))
    return found


def test_front_ends_reach_the_bridge_only_through_its_door():
    desktop = _bridge_reach_through([ROOT / "MuscleSAM" / "MuscleSAM.py"])
    assert not desktop, f"the desktop module imports past MuscleSAMLogic: {sorted(desktop)}"
    web = _bridge_reach_through(python_files("MuscleSAMLib/web"))
    new = web - WEB_REACH_THROUGH
    assert not new, f"the web app reaches past MuscleSAMLogic (add a logic method instead): {sorted(new)}"
    gone = WEB_REACH_THROUGH - web
    assert not gone, f"no longer reached past the door: remove from WEB_REACH_THROUGH: {sorted(gone)}"
    into_sessions = [str(p.relative_to(ROOT)) for p in python_files("MuscleSAMLib/web")
                     if p.name != "routes.py" and ".session(" in p.read_text(encoding="utf-8")]
    assert not into_sessions, f"the web app reaches into the bridge's engine sessions (use a logic method): {into_sessions}"


def test_the_import_graph_reader_sees_lazy_and_relative_imports(tmp_path):
    """The checks above can fail: a lazy relative import upward inside a function is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..scene_bridge import prompts\n    from ..web.app import build\n")
    found = {(i.module, i.name) for i in imports_of(probe, "MuscleSAMLib.engine.probe")}
    assert ("MuscleSAMLib.scene_bridge", "prompts") in found and ("MuscleSAMLib.web.app", "build") in found


def test_an_installed_but_broken_package_fails_the_suite_instead_of_skipping_it():
    """The bridge suites import slicer through import_declared: skip only when it is not installed at all."""
    import pytest

    from musclesam_test_helpers import import_declared

    with pytest.raises(pytest.fail.Exception, match="numpy is installed but `import numpy.no_such_module` fails"):
        import_declared("numpy.no_such_module", "numpy")  # installed distribution, broken import
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        import_declared("no_such_module", "no-such-distribution-musclesam")
    assert import_declared("numpy", "numpy").__name__ == "numpy"
    for name in ("test_scene_bridge", "test_bad_input_bridge", "test_bridge_biomarkers", "test_cancel_random",
                 "test_edit_record"):
        text = (ROOT / "Testing" / "Python" / f"{name}.py").read_text()
        assert 'import_declared("slicer", "slicer-core")' in text and "importorskip" not in text, name
