"""DESIGN.md layers: the core engine imports no Slicer, Qt or trame (front ends only wire)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ["MuscleSAMLib.volumes", "MuscleSAMLib.intensity", "MuscleSAMLib.slice_geometry", "MuscleSAMLib.metrics",
        "MuscleSAMLib.phantoms", "MuscleSAMLib.models", "MuscleSAMLib.engine.segmenter", "MuscleSAMLib.engine.volume_run",
        "MuscleSAMLib.engine.propagation", "MuscleSAMLib.segment_case", "MuscleSAMLib.evaluation",
        "MuscleSAMLib.biomarkers", "MuscleSAMLib.corrections.bundle", "MuscleSAMLib.training.trainer",
        "MuscleSAMLib.cli.main", "MuscleSAMLib.scene_bridge"]


def test_core_engine_imports_without_slicer_qt_or_trame():
    code = (
        "import sys\n"
        "for name in ('slicer', 'qt', 'ctk', 'trame', 'trame_slicer', 'vtk'):\n"
        "    sys.modules[name] = None  # any import of these now fails\n"
        f"for mod in {CORE!r}:\n"
        "    __import__(mod)\n"
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
