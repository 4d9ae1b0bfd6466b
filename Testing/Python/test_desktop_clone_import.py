"""Loading MuscleSAM.py from a clone's MuscleSAM/ folder (Slicer > Additional module paths) finds MuscleSAMLib.

Slicer puts only the module's own folder on sys.path and loads the file as module ``MuscleSAM``
(registered in sys.modules, then executed: qSlicerScriptedUtils::loadSourceAsModule, v5.6.2 through
v5.10.0). A stub ``slicer``/``qt``/``vtk`` stands in for the application; its parameterNodeWrapper resolves
the parameter node's annotations with typing.get_type_hints, as Slicer's does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STUBS = {
    "qt.py": "def __getattr__(name):\n    return type(name, (), {})\n",
    "vtk.py": "def __getattr__(name):\n    return type(name, (), {})\n",
    "slicer/__init__.py": "def __getattr__(name):\n    if name.startswith('vtkMRML'):\n"
                          "        return type(name, (), {})\n    raise AttributeError(name)\n",
    "slicer/util.py": "class VTKObservationMixin:\n    pass\n",
    "slicer/ScriptedLoadableModule.py": "".join(f"class {n}:\n    pass\n" for n in (
        "ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
        "ScriptedLoadableModuleWidget")),
    "slicer/parameterNodeWrapper.py": textwrap.dedent("""\
        import typing
        RESOLVED = {}
        class Choice:
            def __init__(self, choices):
                self.choices = choices
        class WithinRange:
            def __init__(self, minimum, maximum):
                self.minimum, self.maximum = minimum, maximum
        def parameterNodeWrapper(cls):
            RESOLVED[cls.__name__] = typing.get_type_hints(cls, include_extras=True)  # as Slicer's _processClass
            return cls
        """),
}

LOAD_AS_SLICER_DOES = textwrap.dedent("""\
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("MuscleSAM", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules["MuscleSAM"] = module
    spec.loader.exec_module(module)
    import MuscleSAMLib
    from slicer.parameterNodeWrapper import RESOLVED
    print(MuscleSAMLib.__file__)
    print(sorted(RESOLVED["MuscleSAMParameterNode"]))
    """)


def _run(module_dir: Path, stubs: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(stubs), str(module_dir)])  # what Slicer's sys.path gives the module
    return subprocess.run([sys.executable, "-c", LOAD_AS_SLICER_DOES, str(module_dir / "MuscleSAM.py")], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _stubs(tmp_path: Path) -> Path:
    stubs = tmp_path / "stubs"
    for rel, text in STUBS.items():
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text(text)
    return stubs


def test_module_loaded_from_a_copy_of_the_clone_finds_the_clones_engine(tmp_path):
    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "MuscleSAM", clone / "MuscleSAM", ignore=ignore)
    shutil.copytree(ROOT / "MuscleSAMLib", clone / "MuscleSAMLib", ignore=ignore)
    proc = _run(clone / "MuscleSAM", _stubs(tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lib_file, params = proc.stdout.strip().splitlines()[-2:]
    assert Path(lib_file).resolve().is_relative_to(clone.resolve()), lib_file
    assert "uncertaintyKind" in params and "opacity" in params


def test_module_installed_beside_the_engine_uses_that_engine(tmp_path):
    """The extension build's layout: MuscleSAM.py and MuscleSAMLib/ in one qt-scripted-modules folder."""
    installed = tmp_path / "qt-scripted-modules"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "MuscleSAM", installed, ignore=ignore)
    shutil.copytree(ROOT / "MuscleSAMLib", installed / "MuscleSAMLib", ignore=ignore)
    proc = _run(installed, _stubs(tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip().splitlines()[-2]).resolve().is_relative_to(installed.resolve())
