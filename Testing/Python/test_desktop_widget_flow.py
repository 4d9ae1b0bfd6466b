"""The desktop widget's handlers on real MRML (slicer-core) and a real bridge; only Qt is stubbed.

Desktop Slicer cannot run here. MuscleSAM.py is loaded with stand-ins for what slicer-core lacks (qt,
parameterNodeWrapper, ScriptedLoadableModule, message boxes) and its handlers are called as the buttons
would: Segment, then Propagate right after it (the chosen muscle's boxes of that run), an undo state before a
run writes, scene close forgetting the boxes, export into a Windows-safe bundle folder.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from musclesam_test_helpers import ROOT, import_declared, write_random_decoder_ensemble

slicer = import_declared("slicer", "slicer-core")

from MuscleSAMLib.engine.boxes import boxes_from_labels  # noqa: E402
from MuscleSAMLib.engine.propagation import DirectionStop, PropagationResult  # noqa: E402
from MuscleSAMLib.sample_data import sample_case  # noqa: E402
from MuscleSAMLib.scene_bridge import geometry as G  # noqa: E402
from MuscleSAMLib.scene_bridge import prompts as P  # noqa: E402
from MuscleSAMLib.scene_bridge.headless import headless_scene  # noqa: E402
from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic  # noqa: E402
from MuscleSAMLib.volumes import Volume, read_volume  # noqa: E402


class _Base:
    def __init__(self, *args, **kwargs):
        pass


class _Mixin(_Base):
    pass


class _Params(types.SimpleNamespace):
    """The parameter node's fields (Slicer's wrapper also connects the .ui: nothing to connect here)."""

    def connectGui(self, ui):
        return "tag"

    def disconnectGui(self, tag):
        pass


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@pytest.fixture
def desktop(monkeypatch, tmp_path):
    """(module, widget, scene, messages): MuscleSAM.py's widget with a fake .ui on a real scene and bridge."""
    scene = headless_scene()
    monkeypatch.setitem(sys.modules, "qt", _stub("qt", QKeySequence=mock.MagicMock(), QTimer=mock.MagicMock(),
                                                 QSettings=mock.MagicMock(), Qt=mock.MagicMock()))
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", _stub(
        "slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls, Choice=_Base, WithinRange=_Base))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", _stub(
        "slicer.ScriptedLoadableModule", ScriptedLoadableModule=_Base, ScriptedLoadableModuleLogic=_Base,
        ScriptedLoadableModuleTest=_Base, ScriptedLoadableModuleWidget=type("Widget", (_Base,), {})))
    messages: list[tuple[str, str]] = []
    for kind in ("errorDisplay", "warningDisplay", "infoDisplay"):
        monkeypatch.setattr(slicer.util, kind, lambda text, *a, _k=kind, **k: messages.append((_k, str(text))), raising=False)
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(slicer.util, "VTKObservationMixin", _Mixin, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene.scene, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None), raising=False)
    spec = importlib.util.spec_from_file_location("MuscleSAM_under_test", ROOT / "MuscleSAM" / "MuscleSAM.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    bridge = MuscleSAMLogic()
    bridge.load_ensemble("random-test", write_random_decoder_ensemble(tmp_path / "ens", members=2, seed=1), "cpu")
    widget = module.MuscleSAMWidget()
    widget.logic = module.MuscleSAMModuleLogic()
    widget.logic._bridge = bridge
    widget.ui = mock.MagicMock()
    widget.ui.ensembleComboBox.currentData = "random-test"
    widget.ui.exportDirectoryButton.directory = str(tmp_path / "out")
    case = sample_case()
    region = (slice(40, 264), slice(168, 352), slice(6, 9))
    water = G.add_volume_node(scene.scene, Volume(read_volume(case.water).image[region], "crop"), "3: AX T1 water")
    labels = read_volume(case.labels, allow_labels=True).image[region]
    widget._parameterNode = _Params(inputVolume=water, fatVolume=None, segmentation=None)
    widget.boxes = boxes_from_labels(Volume(labels, "labels").canonical_array.astype(np.uint8), values=[2, 8], slices=[1])
    yield module, widget, scene, messages
    bridge.shutdown()
    scene.scene.Clear(1)


def _place(widget, scene, label: int):
    """What Place box + drawing does: one ROI for ``label`` in the widget's pending list."""
    box = next(b for b in widget.boxes if b.label == label)
    roi = P.roi_for_box(scene.scene, G.volume_from_node(widget._parameterNode.inputVolume), box)
    widget._boxes.append(roi)
    return roi


def test_propagate_right_after_segment_uses_that_muscles_boxes(desktop, monkeypatch):
    from MuscleSAMLib.scene_bridge import logic as logic_module

    module, widget, scene, messages = desktop
    _place(widget, scene, 2)
    _place(widget, scene, 8)
    widget.ui.muscleComboBox.currentData = 8
    widget.onSegment()
    assert messages == [] and widget.lastOutcome is not None and sorted(widget.lastOutcome.changed_labels) == [2, 8]
    assert widget._boxes == []  # used: never predicted again
    undo = widget.ui.segmentEditorWidget.saveStateForUndo
    undo.reset_mock()
    widget.onPropagate()  # no box placed since the Segment
    assert not any("no box" in text for _, text in messages), messages
    assert undo.call_count == 1  # the run is an undo step in the embedded Segment Editor

    def walk(predict, box, n_slices, **kw):  # the random ensemble's walk keeps nothing: a walk that keeps its start
        edge = DirectionStop(1, "volume edge", box.slice, box.slice, "")
        return PropagationResult(start=box, predictions=[predict(box)],
                                 stops={1: edge, -1: DirectionStop(-1, "low expected quality", box.slice - 1, box.slice,
                                                                   "the model's predicted IoU 0.700 < 0.750")})

    monkeypatch.setattr(logic_module, "propagate_box", walk)
    widget.onPropagate()
    status = widget.ui.statusLabel.text  # where each direction stopped, named as the web page names it
    assert "; stopped down: low expected quality at slice " in status and "; stopped up: volume edge at slice " in status
    widget.ui.muscleComboBox.currentData = 5  # a muscle that never had a box
    widget.onPropagate()
    assert any("no box for this muscle" in text for _, text in messages[-1:]), messages


def test_scene_close_forgets_the_boxes_and_export_folder_names_are_safe(desktop, tmp_path):
    module, widget, scene, messages = desktop
    _place(widget, scene, 2)
    widget.ui.muscleComboBox.currentData = 2
    widget.onSegment()
    widget.onExport()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["3_AX_T1_water_musclesam"]  # no ':' (Windows)
    assert any(kind == "infoDisplay" and "Corrected labels written" in text for kind, text in messages)
    params = widget._parameterNode
    widget.onSceneStartClose(None, None)  # File > Close Scene; the next case gets the same volume ID
    widget._parameterNode = params
    widget.onPropagate()
    assert "no box for this muscle" in messages[-1][1]


def test_install_step_logs_each_package_and_pins_slicers_own(desktop, monkeypatch, tmp_path):
    """One explicit step: torch + torchvision through the PyTorch extension, the rest by pip under constraints."""
    module, widget, scene, messages = desktop
    from MuscleSAMLib.scene_bridge import dependencies as D

    wanted = {r.dist: r for r in D.REQUIREMENTS}
    monkeypatch.setattr(module.dependencies, "missing_requirements",
                        lambda: [wanted["torch"], wanted["torchvision"], wanted["segment-anything"]])
    monkeypatch.setattr(widget.logic, "dataFolder", lambda: str(tmp_path / "user"))
    monkeypatch.setattr(widget, "checkDependencies", lambda: None)
    pip_calls, torch_calls = [], []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", pip_calls.append, raising=False)
    monkeypatch.setattr(slicer.util, "moduleNames", lambda: ["PyTorchUtils", "SampleData"], raising=False)
    logic = types.SimpleNamespace(installTorch=lambda **kw: torch_calls.append(kw))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", _stub("PyTorchUtils", PyTorchUtilsLogic=lambda: logic))
    widget.onInstallDependencies()
    assert torch_calls == [{"askConfirmation": False, "torchVersionRequirement": ">=2.1,<3",
                            "torchvisionVersionRequirement": ">=0.16,<1"}]
    constraints = tmp_path / "user" / "slicer-constraints.txt"
    assert pip_calls == [["segment-anything>=1.0,<2", "-c", str(constraints)]]  # never numpy & co.
    assert f"numpy=={np.__version__}" in constraints.read_text().split()
    logged = " ".join(str(c.args[0]) for c in widget.ui.installLogTextEdit.appendPlainText.call_args_list)
    assert "installing segment-anything>=1.0,<2" in logged and "numpy" in logged
    assert "torch" in sys.modules  # imported before the install here, so Slicer must restart to use the new one
    assert "Restart Slicer" in logged and [k for k, _ in messages] == ["infoDisplay"]


def test_first_segment_loads_the_ensemble_and_leaving_the_module_deactivates_the_editor(desktop, monkeypatch, tmp_path):
    module, widget, scene, messages = desktop
    manifest = write_random_decoder_ensemble(tmp_path / "ens2", members=2, seed=2)
    widget.logic._bridge.shutdown()
    widget.logic._bridge = MuscleSAMLogic()  # nothing loaded: no Initialize pressed
    monkeypatch.setattr(widget.logic, "manifest", lambda: str(manifest))
    _place(widget, scene, 2)
    widget.onSegment()
    assert messages == [] and widget.logic.bridge.loaded is not None and widget.lastOutcome is not None
    widget.exit()
    widget.ui.segmentEditorWidget.setActiveEffect.assert_called_with(None)
    widget.ui.segmentEditorWidget.uninstallKeyboardShortcuts.assert_called_once()


def test_click_tool_places_points_as_clicks_undoes_them_and_shows_the_suggestion(desktop, monkeypatch):
    """MuscleSAMClicks.py on the real widget: place mode on a fiducial, a placed point = one click (Shift or
    'Not muscle' = negative), Undo click, the suggestion marker; scene close leaves place mode."""
    module, widget, scene, messages = desktop
    qt_stub = sys.modules["qt"]
    monkeypatch.setattr(qt_stub, "QApplication", types.SimpleNamespace(keyboardModifiers=lambda: 0), raising=False)
    qt_stub.Qt.ShiftModifier = 0x02000000
    spec = importlib.util.spec_from_file_location("MuscleSAMClicks_under_test", ROOT / "MuscleSAM" / "MuscleSAMClicks.py")
    clicks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clicks)
    _place(widget, scene, 2)
    widget.ui.muscleComboBox.currentData = 2
    widget.ui.negativeClickCheckBox.checked = False
    widget.ui.suggestClickCheckBox.checked = True
    vol = G.volume_from_node(widget._parameterNode.inputVolume)
    monkeypatch.setattr(widget, "_redSliceCenter", lambda: list(G.canonical_to_ras(vol, 50, 50, 1)))
    widget.clickTool = tool = clicks.ClickTool(widget)
    widget.onSegment()
    assert messages == [] and widget.ui.undoClickButton.enabled is False

    tool.onToggled(True)
    interaction = scene.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    assert interaction.GetCurrentInteractionMode() == interaction.Place and interaction.GetPlaceModePersistence() == 1
    rows, cols = np.nonzero(widget.logic.bridge.session(widget._parameterNode.inputVolume).prediction[1] == 2)
    ras = G.canonical_to_ras(vol, cols[len(cols) // 2], rows[len(rows) // 2], 1)
    tool.node.AddControlPoint(*ras)  # what a left click in place mode makes (the observer defers to the main loop)
    tool.addPlacedClicks()
    assert messages == [] and tool.node.GetNumberOfControlPoints() == 0
    bridge = widget.logic.bridge
    assert bridge.clicks_on_slice(widget._parameterNode.inputVolume, bridge.slice_number(widget._parameterNode.inputVolume, 1)) \
        == [{"label": 2, "ras": pytest.approx(ras), "positive": True}]
    assert "click 1 (muscle)" in widget.ui.statusLabel.text and widget.ui.undoClickButton.enabled is True
    assert len(bridge.click_marker_points(widget._parameterNode.inputVolume)["suggested"]) == 1
    widget.ui.negativeClickCheckBox.checked = True
    tool.node.AddControlPoint(*ras)
    tool.addPlacedClicks()
    assert "click 2 (not muscle)" in widget.ui.statusLabel.text
    tool.onUndo()
    assert "taken back, 1 left" in widget.ui.statusLabel.text and messages == []
    widget.ui.muscleComboBox.currentData = 8  # no box for this muscle: a clear message, nothing changes
    tool.node.AddControlPoint(*ras)
    tool.addPlacedClicks()
    assert "draw a box for" in messages[-1][1]
    widget.onSceneStartClose(None, None)
    assert tool.node is None and interaction.GetCurrentInteractionMode() == interaction.ViewTransform
