"""MuscleSAM desktop module: Qt wiring only; every action is one call into MuscleSAMLib.scene_bridge.

Supported: 3D Slicer 5.6 or later (parameterNodeWrapper, vtkMRMLMarkupsROINode, segment status).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from typing import Annotated


def _addCloneRootToPath() -> None:
    """Make MuscleSAMLib importable when the module is loaded from a clone's MuscleSAM/ folder.

    Slicer puts only this file's folder on sys.path. The extension build installs MuscleSAMLib beside this
    file (nothing to do); in a clone it sits beside the folder, so the clone's root is added.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "MuscleSAMLib")) and \
            os.path.isfile(os.path.join(root, "MuscleSAMLib", "__init__.py")) and root not in sys.path:
        sys.path.insert(0, root)


_addCloneRootToPath()

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from MuscleSAMLib.scene_bridge import dependencies  # noqa: E402 (after the clone path above)

MODAL_AFTER_SECONDS = 2.0


class MuscleSAM(ScriptedLoadableModule):
    """Module description (help, licence, intended use)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "MuscleSAM"
        parent.categories = ["Segmentation"]
        parent.contributors = ["MuscleSAM team"]
        parent.helpText = (
            "Uncertainty-aware segmentation of thigh muscles in MRI with a Segment Anything (SAM) deep ensemble. "
            "Pick a muscle, place a box around it on an axial slice, press Segment; review the uncertainty heatmap "
            "and the most uncertain places (N), correct with the Segment Editor, lock finished muscles, export.<br>"
            "<b>Research and demonstration use only; not for clinical use.</b><br>"
            "Licence: the module is Apache-2.0; each ensemble's weights carry their own licence, shown in the "
            "ensemble selector's tooltip and written into every export (weights/MODEL_CARD.md).")
        parent.acknowledgementText = "Built on 3D Slicer, Segment Anything (Apache-2.0) and PyTorch."


@parameterNodeWrapper
class MuscleSAMParameterNode:
    """Module state saved with the scene.

    Each field bound in MuscleSAM.ui carries what Slicer's GUI connectors require (a combo box needs Choice, a
    slider a WithinRange): one refused binding leaves the whole panel unconnected
    (Testing/Python/test_desktop_ui_bindings.py checks it).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    fatVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    ensemble: str = ""
    uncertaintyKind: Annotated[str, Choice(["total", "epistemic", "aleatoric"])] = "total"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    threshold: Annotated[float, WithinRange(0.0, 0.69)] = 0.05  # nats; ln 2 is the most a two-class entropy reaches


class MuscleSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: each handler is one bridge call plus UI feedback."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode, self._parameterNodeGuiTag = None, None
        self._boxes = []
        self._running, self._progress = False, None
        self._bundles, self._learning = [], None  # exported bundles (folder, image file); the learning job

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MuscleSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MuscleSAMLogic()
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.ui.exportDirectoryButton.directory = os.path.expanduser("~")
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.initializeButton.connect("clicked(bool)", self.onInitialize)
        self.ui.placeBoxButton.connect("clicked(bool)", self.onPlaceBox)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.lockButton.connect("toggled(bool)", self.onLock)
        self.ui.uncertaintyKindComboBox.connect("currentIndexChanged(int)", self.onDisplayChanged)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.agreementCheckBox.connect("toggled(bool)", self.onAgreement)
        self.ui.nextUncertainButton.connect("clicked(bool)", self.onNextUncertain)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.learnButton.connect("clicked(bool)", self.onLearn)
        self.ui.learnCancelButton.connect("clicked(bool)", lambda: self._learning and self._learning.cancel())
        for button, key in ((self.ui.placeBoxButton, "B"), (self.ui.segmentButton, "S"), (self.ui.propagateButton, "P"),
                            (self.ui.nextUncertainButton, "N"), (self.ui.cancelButton, "Esc")):
            button.setShortcut(qt.QKeySequence(key))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, lambda caller, event: self.initializeParameterNode())
        self.initializeParameterNode()
        self.checkDependencies()

    # ---------------------------------------------------------------- parameter node
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        self._boxes = []

    def cleanup(self):
        self.removeObservers()
        if self.logic is not None:
            self.logic.shutdown()

    # ---------------------------------------------------------------- dependencies and ensemble
    def checkDependencies(self):
        message = dependencies.describe_missing()
        self.ui.dependencyLabel.text = message
        self.ui.dependencyLabel.visible = bool(message)
        self.ui.installDependenciesButton.visible = bool(message)
        self.ui.cpuWarningLabel.visible = False
        for w in (self.ui.initializeButton, self.ui.placeBoxButton, self.ui.segmentButton, self.ui.propagateButton,
                  self.ui.nextUncertainButton, self.ui.exportButton):
            w.enabled = not message
        if not message:
            self.fillSelectors()

    def onInstallDependencies(self):
        """Install on the MAIN thread, only from this button (pip from a worker thread hangs Slicer)."""
        missing = dependencies.missing_requirements()
        if not missing or not slicer.util.confirmOkCancelDisplay(
                "Install " + ", ".join(r.pip for r in missing) + "? This downloads packages and may take minutes."):
            return
        with slicer.util.tryWithErrorDisplay("Installing dependencies failed.", waitCursor=True):
            for req in missing:
                if req.via == "pytorch" and "PyTorchUtils" in slicer.util.moduleNames():  # the PyTorch extension
                    import PyTorchUtils
                    PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True, torchVersionRequirement=">=2.1,<3")
                else:
                    slicer.util.pip_install(req.pip)
        self.checkDependencies()

    def fillSelectors(self):
        from MuscleSAMLib.sample_data import muscle_names

        self.ui.muscleComboBox.clear()
        for label, info in sorted(muscle_names().items()):
            self.ui.muscleComboBox.addItem(f"{info['abbrev']} - {info['name']}", label)
        self.ui.ensembleComboBox.clear()
        try:
            choices = self.logic.bridge.ensemble_choices()
        except Exception as exc:  # a missing/broken manifest is shown, not raised
            self.ui.statusLabel.text = str(exc)
            return
        for n, choice in enumerate(choices):
            self.ui.ensembleComboBox.addItem(choice.name + ("" if choice.installed else " (not installed)"), choice.name)
            self.ui.ensembleComboBox.setItemData(n, f"Licence: {choice.licence}\n{choice.description}", qt.Qt.ToolTipRole)
            if choice.default:
                self.ui.ensembleComboBox.currentIndex = n

    # ---------------------------------------------------------------- running
    def _pump(self):
        """Keep Slicer responsive while the worker predicts; a modal progress only after ~2 s."""
        slicer.app.processEvents()
        if self._progress is None and time.perf_counter() - self._started > MODAL_AFTER_SECONDS:
            self._progress = slicer.util.createProgressDialog(labelText="Predicting...", maximum=0)
            self._progress.connect("canceled()", self.onCancel)

    def _run(self, action, what):
        """Run one bridge call with the in-flight guard; errors become a message, the scene stays unchanged."""
        if self._running:
            return None
        self._running = True
        self._started = time.perf_counter()
        self._setBusy(True)
        try:
            result = action()
            self.ui.statusLabel.text = f"{what} done in {time.perf_counter() - self._started:.1f} s"
            return result
        except Exception as exc:
            self.ui.statusLabel.text = f"{what}: {exc}"
            if type(exc).__name__ != "Cancelled":  # a Cancel is not an error
                logging.exception(what)
                slicer.util.errorDisplay(f"{what} failed: {exc}")
            return None
        finally:
            if self._progress is not None:
                self._progress.close()
                self._progress = None
            self._setBusy(False)
            self._running = False

    def _setBusy(self, busy):
        for w in (self.ui.initializeButton, self.ui.segmentButton, self.ui.propagateButton, self.ui.exportButton):
            w.enabled = not busy
        self.ui.cancelButton.enabled = busy

    def _volume(self):
        return self._parameterNode.inputVolume if self._parameterNode else None

    def _muscle(self):
        return self.ui.muscleComboBox.currentData

    def onInitialize(self):
        name = self.ui.ensembleComboBox.currentData
        center = self._redSliceCenter()
        if self._run(lambda: self.logic.bridge.initialize(self._volume(), name, center_ras=center, pump=self._pump),
                     "Initialize") is not None:
            self.ui.cpuWarningLabel.visible = self.logic.bridge.on_cpu  # persistent while on the CPU

    @staticmethod
    def _redSliceCenter():
        red = slicer.app.layoutManager().sliceWidget("Red") if slicer.app.layoutManager() else None
        if red is None:
            return None
        m = red.sliceLogic().GetSliceNode().GetSliceToRAS()
        return [m.GetElement(0, 3), m.GetElement(1, 3), m.GetElement(2, 3)]

    def onPlaceBox(self):
        self._boxes.append(self.logic.bridge.start_box_placement(slicer.mrmlScene, self._muscle()))

    def _placedBoxes(self):
        self._boxes = [b for b in self._boxes if slicer.mrmlScene.IsNodePresent(b) and b.GetNumberOfControlPoints() > 0]
        return list(self._boxes)

    def _withFatImage(self, call):
        """Run ``call`` after handing the bridge the chosen Dixon fat image (review table fat fraction)."""
        try:
            self.logic.bridge.set_fat_image(self._volume(), self._parameterNode.fatVolume)
        except Exception as exc:  # a wrong fat image only costs the fat fraction columns, never the run
            self.logic.bridge.set_fat_image(self._volume(), None)
            slicer.util.warningDisplay(f"Fat fraction left out: {exc}")
        return call()

    def onSegment(self):
        outcome = self._run(lambda: self._withFatImage(lambda: self.logic.bridge.segment(
            self._volume(), self._placedBoxes(), self._parameterNode.segmentation, pump=self._pump)), "Segment")
        self._show(outcome)

    def onPropagate(self):
        boxes = self._placedBoxes()
        outcome = self._run(lambda: self._withFatImage(lambda: self.logic.bridge.propagate(
            self._volume(), boxes[-1] if boxes else None, self._parameterNode.segmentation, pump=self._pump)), "Propagate")
        self._show(outcome)

    def onCancel(self):
        self.logic.bridge.cancel()

    def _show(self, outcome):
        if outcome is None:
            return
        self._boxes = []  # used: a later Segment must not re-predict them over the user's edits
        self._parameterNode.segmentation = outcome.segmentation_node
        self.ui.segmentEditorWidget.setSegmentationNode(outcome.segmentation_node)
        self.ui.segmentEditorWidget.setSourceVolumeNode(self._volume())
        self.ui.reviewTableView.setMRMLTableNode(outcome.table_node)
        notes = [f"{len(outcome.changed_labels)} muscles written on slices {outcome.slices}"]
        notes += [f"flagged uncertain: {outcome.flagged_labels}"] if outcome.flagged_labels else []
        notes += [f"rejected {src}: {why}" for src, why in outcome.rejected]
        notes += [f"stopped: {stop}" for stop in outcome.stops.values()]
        self.ui.statusLabel.text = "; ".join(notes)
        self._updateNextButton()

    def onLock(self, locked):
        if self._parameterNode.segmentation is not None:
            with slicer.util.tryWithErrorDisplay("Could not change the lock."):
                self.logic.bridge.lock_segment(self._parameterNode.segmentation, self._muscle(), locked)

    # ---------------------------------------------------------------- display and review
    def onDisplayChanged(self, *_):
        volume = self._volume()
        if volume is None or not self.logic.bridgeStarted:
            return
        with slicer.util.tryWithErrorDisplay("No heatmap yet.", show=False):  # before the first Segment: nothing to show
            self.logic.bridge.show_uncertainty(volume, self.ui.uncertaintyKindComboBox.currentText,
                                               self.ui.opacitySlider.value, self.ui.thresholdSlider.value)

    def onAgreement(self, show):
        with slicer.util.tryWithErrorDisplay("Could not show the agreement outlines."):
            self.logic.bridge.show_agreement_outlines(self._volume(), show)

    def onNextUncertain(self):
        with slicer.util.tryWithErrorDisplay("Nothing to review."):
            target = self.logic.bridge.next_uncertain(self._volume())
            self.ui.statusLabel.text = ("All places reviewed." if target is None else
                                        f"#{target.rank}: {target.muscle} on slice {target.slice} "
                                        f"(uncertainty {target.uncertainty:.3f} nats, expected DSC {target.expected_dsc:.2f})")
        self._updateNextButton()

    def _updateNextButton(self):
        left = self.logic.bridge.remaining_reviews(self._volume())
        self.ui.nextUncertainButton.text = f"Next most uncertain (N) - {left} left"

    # ---------------------------------------------------------------- export
    def onExport(self):
        volume = self._volume()
        folder = os.path.join(self.ui.exportDirectoryButton.directory, (volume.GetName() if volume else "case") + "_musclesam")
        path = self._run(lambda: self.logic.bridge.export_corrected(volume, self._parameterNode.segmentation, folder,
                                                                    self._parameterNode.fatVolume), "Export")
        if path is not None:
            self._bundles.append((str(path), volume.GetStorageNode().GetFileName() if volume.GetStorageNode() else ""))
            self.ui.learnButton.enabled = True
            slicer.util.infoDisplay(f"Corrected labels written to {path}\n{self.logic.bridge.edit_check_summary(path)}")

    def onLearn(self):  # learning from corrections: a background job, polled by a QTimer on the main thread
        from MuscleSAMLib.scene_bridge import start_learning  # a lazy name of scene_bridge (learning_runner)
        self._learning = start_learning([b for b, _ in self._bundles], self.ui.ensembleComboBox.currentData,
                                        images=[i for _, i in self._bundles] if all(i for _, i in self._bundles) else ())
        self._pollLearning()

    def _pollLearning(self):
        h = self._learning
        self.ui.learnButton.enabled, self.ui.learnCancelButton.enabled = not h.running, h.running
        if h.progress is not None:
            self.ui.learnProgressBar.value, self.ui.statusLabel.text = int(100 * h.progress.fraction), h.progress.message
        if h.running:
            return qt.QTimer.singleShot(300, self._pollLearning)
        self.fillSelectors()  # the new ensemble is in the manifest now
        (slicer.util.infoDisplay if h.result else slicer.util.errorDisplay)(
            f"New ensemble {h.result['name']}: before/after in {h.result['report']}" if h.result else f"Learning: {h.error}")


class MuscleSAMLogic(ScriptedLoadableModuleLogic):
    """Thin wrapper: the parameter node plus the scene bridge (created on first use, after the dependency check)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._bridge = None

    def getParameterNode(self):
        return MuscleSAMParameterNode(super().getParameterNode())

    @staticmethod
    def segmentEditorNode():
        """The module's own Segment Editor node (a singleton in the scene)."""
        node = slicer.mrmlScene.GetSingletonNode("MuscleSAM", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag("MuscleSAM")
            node = slicer.mrmlScene.AddNode(node)
        return node

    @property
    def bridgeStarted(self):
        return self._bridge is not None

    @property
    def bridge(self):
        if self._bridge is None:
            from MuscleSAMLib.scene_bridge import MuscleSAMLogic as BridgeLogic

            self._bridge = BridgeLogic()
        return self._bridge

    def shutdown(self):
        if self._bridge is not None:
            self._bridge.shutdown()
            self._bridge = None


class MuscleSAMTest(ScriptedLoadableModuleTest):
    """Runs the bridge on the embedded sample with the demo ensemble (MUSCLESAM_REGENERATE_REFERENCE=1 rewrites the reference)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_with_demo_ensemble()  # needs the demo ensemble installed (weights/manifest.json)

    def test_sample_with_demo_ensemble(self):
        from MuscleSAMLib.sample_data import sample_case

        case = sample_case()
        volume = slicer.util.loadVolume(str(case.water))
        labels = slicer.util.loadLabelVolume(str(case.labels))
        bridge = MuscleSAMLogic().bridge
        try:
            bridge.initialize(volume, pump=slicer.app.processEvents)
            boxes = bridge.boxes_from_labelmap(volume, labels, values=[2, 3, 8, 10], slices=[7])
            self.assertTrue(boxes)
            outcome = bridge.segment(volume, boxes, pump=slicer.app.processEvents)
            seg = outcome.segmentation_node
            self.assertTrue(outcome.changed_labels)
            ijkToRas = [vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()]
            volume.GetIJKToRASMatrix(ijkToRas[0])
            outcome.heatmap_node.GetIJKToRASMatrix(ijkToRas[1])
            for r, c in ((r, c) for r in range(4) for c in range(4)):
                self.assertAlmostEqual(ijkToRas[0].GetElement(r, c), ijkToRas[1].GetElement(r, c), places=5)
            target = bridge.next_uncertain(volume)
            self.assertIsNotNone(target)
            heat = slicer.util.arrayFromVolume(outcome.heatmap_node)
            stats = {"mean_uncertainty": float(heat[heat > 0].mean()), "first_review": [target.slice, target.label],
                     "review_rows": outcome.table_node.GetNumberOfRows()}
            self._compareReference(stats)
            bridge.lock_segment(seg, outcome.changed_labels[0])  # a locked muscle's box is refused
            with self.assertRaises(Exception):
                bridge.segment(volume, [b for b in boxes if b.label == outcome.changed_labels[0]], seg)
            folder = bridge.export_corrected(volume, seg, os.path.join(tempfile.mkdtemp(), "bundle"))
            self.assertTrue(os.path.isfile(os.path.join(folder, "corrected_labels.seg.nrrd")))
            self.assertTrue(json.loads(open(os.path.join(folder, "report.json")).read()))
            self.delayDisplay("MuscleSAM self-test passed")
        finally:
            bridge.shutdown()

    def _compareReference(self, stats):
        path = os.path.join(os.path.dirname(__file__), "Resources", "Testing", "demo_reference.json")
        if os.environ.get("MUSCLESAM_REGENERATE_REFERENCE") == "1":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                json.dump(stats, fh, indent=1)
            return
        if not os.path.isfile(path):
            self.delayDisplay("No frozen reference yet (set MUSCLESAM_REGENERATE_REFERENCE=1 to write one)")
            return
        reference = json.load(open(path))
        self.assertAlmostEqual(stats["mean_uncertainty"], reference["mean_uncertainty"], places=3)
        self.assertEqual(stats["first_review"], reference["first_review"])
        self.assertEqual(stats["review_rows"], reference["review_rows"])
