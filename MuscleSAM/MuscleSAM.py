"""MuscleSAM desktop module: Qt wiring only; every action is one call into MuscleSAMLib.scene_bridge.

Supported: 3D Slicer 5.6 to 5.10 (Python 3.9 and 3.12; parameterNodeWrapper, vtkMRMLMarkupsROINode, segment status).
"""

from __future__ import annotations

import logging
import os
import sys
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
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from MuscleSAMLib.scene_bridge import dependencies  # noqa: E402 (after the clone path above)

# Keys Slicer 5.6-5.10 already use while this panel is shown (read at v5.6.2, v5.8.1, v5.10.0): slice views
# b f g r t v V, arrows, brackets/braces (vtkMRMLSliceIntersectionWidget.cxx); the embedded Segment Editor
# 0-9, Shift+0-9, Esc, Space, z y q w i / * , . < > (qMRMLSegmentEditorWidget::installKeyboardShortcuts).
# MuscleSAM's keys avoid them all (test_desktop_ui_bindings.py checks it).
SHORTCUTS = {"placeBoxButton": "A", "clickToolButton": "C", "segmentButton": "S", "propagateButton": "P", "nextUncertainButton": "N",
             "cancelButton": "Shift+Esc"}


class MuscleSAM(ScriptedLoadableModule):
    """Module description (help, licence, intended use); registers the embedded thigh sample with Sample Data."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "MuscleSAM"
        parent.categories = ["Segmentation"]
        parent.contributors = ["MuscleSAM team"]
        parent.helpText = (
            "Uncertainty-aware segmentation of thigh muscles in MRI with a Segment Anything (SAM) deep ensemble. "
            "Pick a muscle, place a box (A) around it on an axial slice, press Segment (S) or Propagate (P); review "
            "the uncertainty heatmap and the most uncertain places (N), correct with clicks (C: muscle, Shift: not muscle) "
            "or the Segment Editor, lock "
            "finished muscles, export.<br><b>Research and demonstration use only; not for clinical use.</b><br>"
            "Licence: the module is Apache-2.0 (LICENSE); each ensemble's weights carry their own licence, shown in "
            "the ensemble selector's tooltip and written into every export (weights/MODEL_CARD.md).")
        parent.acknowledgementText = "Built on 3D Slicer, Segment Anything (Apache-2.0) and PyTorch."
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The embedded Dixon thigh (water and fat, Apache-2.0) in Sample Data's 'MuscleSAM' category.

    Only keyword arguments registerCustomSampleDataSource takes in Slicer 5.6-5.10 (5.10 renamed loadFileType to
    loadFileTypes; both default to a volume). The files ship with the module: file:// URIs (urllib reads them).
    """
    import SampleData
    from MuscleSAMLib.sample_data import sample_case

    try:
        case = sample_case()
    except Exception as exc:  # a clone without the sample: the module still works on the user's own images
        logging.warning(f"MuscleSAM sample data not registered: {exc}")
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MuscleSAM", sampleName=f"{case.name} thigh Dixon",
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "MuscleSAM.png"),
        uris=[case.water.as_uri(), case.fat.as_uri()], fileNames=[case.water.name, case.fat.name],
        nodeNames=[f"{case.name}_water", f"{case.name}_fat"])


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
        self._boxes = []  # placed ROI nodes not yet used by a run
        self._lastBoxes = {}  # (volume ID, label) -> the boxes Propagate walks next (scene_bridge.last_run_boxes)
        self._running, self._stage, self._started = False, "", 0.0
        self._bundles, self._learning = [], None  # exported bundles (folder, image file); the learning job
        self.lastOutcome = None  # the last run's RunOutcome (the self-test reads it)
        self.clickTool = None  # Click, Undo click, Suggest next click (MuscleSAMClicks.py)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MuscleSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MuscleSAMModuleLogic()
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.ui.segmentEditorWidget.setMaximumNumberOfUndoStates(10)  # a prediction is an undo step (see _saveUndoState)
        self.ui.exportDirectoryButton.directory = os.path.expanduser("~")
        self.ui.dataDirectoryButton.directory = self.logic.dataFolder()
        self.ui.runProgressBar.visible = False
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
        self.ui.dataDirectoryButton.connect("directoryChanged(QString)", self.onDataFolderChanged)
        self.ui.learnButton.connect("clicked(bool)", self.onLearn)
        self.ui.learnCancelButton.connect("clicked(bool)", lambda: self._learning and self._learning.cancel())
        import MuscleSAMClicks  # beside this file (the extension build installs it too)

        self.clickTool = MuscleSAMClicks.ClickTool(self)
        for name, key in SHORTCUTS.items():
            getattr(self.ui, name).setShortcut(qt.QKeySequence(key))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.checkDependencies()

    def enter(self):
        """As Slicer's Segment Editor module: the embedded editor's keys only while this module is shown."""
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self):
        self.ui.segmentEditorWidget.setActiveEffect(None)  # no paint brush left active in other modules
        if self.clickTool is not None:
            self.clickTool.stop()  # nor the click place mode
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        if self._parameterNode:  # as Slicer's module template: the node stays, the GUI is disconnected
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    # ---------------------------------------------------------------- parameter node and scene
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode, self._parameterNodeGuiTag = parameterNode, None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onSceneStartClose(self, caller, event):
        """The next case reuses node IDs: forget every box of this one (the bridge drops its own state)."""
        self.setParameterNode(None)
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self._boxes, self._lastBoxes = [], {}
        if self.clickTool is not None:
            self.clickTool.stop()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        if self.logic is not None:
            self.logic.shutdown()

    # ---------------------------------------------------------------- dependencies and ensemble
    def checkDependencies(self):
        message = dependencies.describe_missing()
        self.ui.dependencyLabel.text = message
        self.ui.dependencyLabel.visible = bool(message)
        self.ui.installDependenciesButton.visible = bool(dependencies.missing_requirements())
        self.ui.installLogTextEdit.visible = bool(message)
        if message:
            self.ui.installLogTextEdit.setPlainText("\n".join(s.line() for s in dependencies.check()))
        self.ui.cpuWarningLabel.visible = False
        for w in (self.ui.initializeButton, self.ui.placeBoxButton, self.ui.segmentButton, self.ui.propagateButton,
                  self.ui.nextUncertainButton, self.ui.exportButton):
            w.enabled = not message
        if not message:
            self.fillSelectors()

    def onInstallDependencies(self):
        """One explicit step on the MAIN thread (pip from a worker thread hangs Slicer), logged package by package.

        Slicer's own numpy/SimpleITK/pydicom/vtk are pinned by a constraints file, so nothing here replaces them.
        """
        missing = dependencies.missing_requirements()
        if not missing or not slicer.util.confirmOkCancelDisplay(
                "Install " + ", ".join(r.pip for r in missing) + "? This downloads packages and may take minutes."):
            return
        log = self.ui.installLogTextEdit
        log.visible = True
        constraints = dependencies.write_constraints(os.path.join(self.logic.dataFolder(), "slicer-constraints.txt"))
        pytorch = [r for r in missing if r.via == "pytorch"] if "PyTorchUtils" in slicer.util.moduleNames() else []
        done = []
        try:
            if pytorch:  # the PyTorch extension picks the build for this GPU/driver; torch and torchvision together
                log.appendPlainText("installing torch and torchvision through the PyTorch extension ...")
                slicer.app.processEvents()
                import PyTorchUtils
                specs = {r.dist: r.spec for r in dependencies.REQUIREMENTS}
                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=specs["torch"],
                                                              torchvisionVersionRequirement=specs["torchvision"])
                done += pytorch
            for req in (r for r in missing if r not in pytorch):
                log.appendPlainText(f"installing {req.pip} ...")
                self._status(f"MuscleSAM: installing {req.pip}")
                slicer.app.processEvents()
                slicer.util.pip_install(dependencies.pip_arguments(req, constraints))
                done.append(req)
        except Exception as exc:
            log.appendPlainText(f"failed: {exc}")
            slicer.util.errorDisplay(f"Installing dependencies failed: {exc}")
        for line in (s.line() for s in dependencies.check()):
            log.appendPlainText(line)
        if dependencies.restart_needed(done):
            log.appendPlainText("Restart Slicer to use the upgraded packages.")
            slicer.util.infoDisplay("Packages that were already loaded were upgraded: restart Slicer to use them.")
        self._status("")
        self.checkDependencies()

    def fillSelectors(self):
        from MuscleSAMLib.sample_data import muscle_names

        self.ui.muscleComboBox.clear()
        for label, info in sorted(muscle_names().items()):
            self.ui.muscleComboBox.addItem(f"{info['abbrev']} - {info['name']}", label)
        self.ui.ensembleComboBox.clear()
        try:
            choices = self.logic.bridge.ensemble_choices(self.logic.manifest())
        except Exception as exc:  # a missing/broken manifest is shown, not raised
            self.ui.statusLabel.text = str(exc)
            return
        for n, choice in enumerate(choices):
            self.ui.ensembleComboBox.addItem(choice.name + ("" if choice.installed else " (not installed)"), choice.name)
            self.ui.ensembleComboBox.setItemData(n, f"Licence: {choice.licence}\n{choice.description}", qt.Qt.ToolTipRole)
            if choice.default:
                self.ui.ensembleComboBox.currentIndex = n

    def onDataFolderChanged(self, folder):
        self.logic.setDataFolder(folder)
        if not dependencies.describe_missing():
            self.fillSelectors()

    # ---------------------------------------------------------------- running
    @staticmethod
    def _status(message):
        slicer.util.showStatusMessage(message)

    def _pump(self):
        """Keep Slicer responsive while the worker runs; progress in the panel and the status bar (no modal)."""
        elapsed = time.perf_counter() - self._started
        text = f"{self._stage} ... {elapsed:.0f} s (Cancel: Shift+Esc)"
        self.ui.runProgressBar.setFormat(text)
        self.ui.statusLabel.text = text
        self._status(f"MuscleSAM: {text}")
        slicer.app.processEvents()

    def _run(self, action, what):
        """Run one bridge call with the in-flight guard; errors become a message, the scene stays unchanged."""
        if self._running:
            return None
        self._running, self._stage, self._started = True, what.lower(), time.perf_counter()
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
            self._setBusy(False)
            self._status("")
            self._running = False

    def _setBusy(self, busy):
        for w in (self.ui.initializeButton, self.ui.segmentButton, self.ui.propagateButton, self.ui.exportButton):
            w.enabled = not busy
        self.ui.cancelButton.enabled = busy
        self.ui.runProgressBar.visible = busy

    def _volume(self):
        return self._parameterNode.inputVolume if self._parameterNode else None

    def _muscle(self):
        return self.ui.muscleComboBox.currentData

    def _ensureEnsemble(self):
        """Load the chosen ensemble on the first run (Initialize is optional)."""
        bridge, name = self.logic.bridge, self.ui.ensembleComboBox.currentData
        if bridge.loaded is None or bridge.loaded.ensemble.spec.name != name:
            self._stage = "loading the ensemble"
            bridge.load_ensemble(name, self.logic.manifest(), pump=self._pump)
            self.ui.cpuWarningLabel.visible = bridge.on_cpu  # persistent while on the CPU

    def onInitialize(self):
        center = self._redSliceCenter()

        def initialize():
            self._ensureEnsemble()
            self._stage = "encoding the current slice"
            return self.logic.bridge.initialize(self._volume(), self.ui.ensembleComboBox.currentData,
                                                self.logic.manifest(), center_ras=center, pump=self._pump)

        self._run(initialize, "Initialize")

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

    def _saveUndoState(self):
        """Before a run writes: one undo step in the embedded Segment Editor (Ctrl+Z takes the prediction back)."""
        seg = self._parameterNode.segmentation or self.logic.bridge.segmentation_for(self._volume())
        if seg is not None:
            self.ui.segmentEditorWidget.setSegmentationNode(seg)
            self.ui.segmentEditorWidget.saveStateForUndo()

    def _withFatImage(self, call):
        """Run ``call`` after handing the bridge the chosen Dixon fat image (review table fat fraction)."""
        self._ensureEnsemble()
        try:
            self.logic.bridge.set_fat_image(self._volume(), self._parameterNode.fatVolume)
        except Exception as exc:  # a wrong fat image only costs the fat fraction columns, never the run
            self.logic.bridge.set_fat_image(self._volume(), None)
            slicer.util.warningDisplay(f"Fat fraction left out: {exc}")
        self._saveUndoState()
        return call()

    def onSegment(self):
        boxes = self._placedBoxes()

        def segment():
            self._stage = f"segmenting {len(boxes)} box{'es' if len(boxes) != 1 else ''}"
            return self.logic.bridge.segment(self._volume(), boxes, self._parameterNode.segmentation, pump=self._pump)

        self._show(self._run(lambda: self._withFatImage(segment), "Segment"), used=boxes)

    def onPropagate(self):
        from MuscleSAMLib.scene_bridge import propagation_starts  # the web app's rule too

        volume, label, used, starts = self._volume(), self._muscle(), [], []
        last = {lab: boxes for (vid, lab), boxes in self._lastBoxes.items() if volume is not None and vid == volume.GetID()}

        def propagate():
            rois, boxes = propagation_starts(self._placedBoxes(), last, label,
                                             lambda roi: self.logic.bridge.box_from_roi(volume, roi),
                                             lambda boxes: self.logic.bridge.standing_boxes(volume, boxes))
            if not boxes:
                raise ValueError("no box for this muscle yet: place one (A) on an axial slice, then Propagate")
            used.extend(rois)  # placed ROIs: used by this run
            starts.extend(boxes)
            self._stage = "propagating"
            return self.logic.bridge.propagate(volume, boxes, self._parameterNode.segmentation, pump=self._pump)

        outcome = self._run(lambda: self._withFatImage(propagate), "Propagate")
        self._show(outcome, used=used, remember=starts)

    def onCancel(self):
        self.logic.bridge.cancel()

    def _show(self, outcome, used=(), remember=None):
        if outcome is None or self._parameterNode is None:  # failed, or the scene was closed meanwhile
            return
        volume, self.lastOutcome = self._volume(), outcome
        self._boxes = [b for b in self._boxes if b not in used]  # used: a later Segment must not re-predict them
        from MuscleSAMLib.scene_bridge import last_run_boxes  # what Propagate walks next (both front ends)

        ran = [b for b in (outcome.boxes if remember is None else remember) if b is not None]
        for label, boxes in last_run_boxes(ran).items():
            self._lastBoxes[(volume.GetID(), label)] = boxes
        self._parameterNode.segmentation = outcome.segmentation_node
        self.ui.segmentEditorWidget.setSegmentationNode(outcome.segmentation_node)
        self.ui.segmentEditorWidget.setSourceVolumeNode(volume)
        self.ui.reviewTableView.setMRMLTableNode(outcome.table_node)
        notes = [f"{len(outcome.changed_labels)} muscles written on slices {outcome.slices}"]
        notes += [f"flagged uncertain: {outcome.flagged_labels}"] if outcome.flagged_labels else []
        notes += [f"rejected {src}: {why}" for src, why in outcome.rejected]
        notes += [f"stopped {stop}" for stop in outcome.stop_notes]
        self.ui.statusLabel.text = "; ".join(notes)
        self._updateNextButton()
        if self.clickTool is not None:
            self.clickTool.refresh()

    def onLock(self, locked):
        if self._parameterNode.segmentation is not None:
            with slicer.util.tryWithErrorDisplay("Could not change the lock."):
                self.logic.bridge.lock_segment(self._parameterNode.segmentation, self._muscle(), locked)

    # ---------------------------------------------------------------- display and review
    def onDisplayChanged(self, *_):
        volume = self._volume()
        if volume is None or not self.logic.bridgeStarted:
            return
        try:  # before the first Segment there is no heatmap: nothing to show, nothing to report
            self.logic.bridge.show_uncertainty(volume, self.ui.uncertaintyKindComboBox.currentText,
                                               self.ui.opacitySlider.value, self.ui.thresholdSlider.value)
        except Exception as exc:  # (tryWithErrorDisplay(show=False) would re-raise: Slicer's util.py, 5.6-5.10)
            logging.info(f"MuscleSAM heatmap not shown: {exc}")

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

    # ---------------------------------------------------------------- export and learning
    def onExport(self):
        volume = self._volume()
        folder = self.logic.bridge.bundle_folder(self.ui.exportDirectoryButton.directory, volume.GetName() if volume else "")
        path = self._run(lambda: self.logic.bridge.export_corrected(volume, self._parameterNode.segmentation, folder,
                                                                    self._parameterNode.fatVolume), "Export")
        if path is not None:
            self._bundles.append((str(path), volume.GetStorageNode().GetFileName() if volume.GetStorageNode() else ""))
            self.ui.learnButton.enabled = True
            slicer.util.infoDisplay(f"Corrected labels written to {path}\n{self.logic.bridge.edit_check_summary(path)}")

    def onLearn(self):
        """Learning from corrections: a background job into the user's folder, polled by a QTimer on the main thread."""
        from MuscleSAMLib.scene_bridge import learning_output, start_learning, user_manifest

        with slicer.util.tryWithErrorDisplay("Learning from corrections could not start."):
            manifest = user_manifest(self.logic.dataFolder())  # an unwritable folder is a message, never the install tree
            out = learning_output(self.logic.dataFolder(), time.strftime("%Y%m%d-%H%M%S"))
            self._learning = start_learning(
                [b for b, _ in self._bundles], self.ui.ensembleComboBox.currentData, manifest=manifest,
                out=out, images=[i for _, i in self._bundles] if all(i for _, i in self._bundles) else ())
            self._pollLearning()

    def _pollLearning(self):
        h = self._learning
        self.ui.learnButton.enabled, self.ui.learnCancelButton.enabled = not h.running, h.running
        if h.progress is not None:
            self.ui.learnProgressBar.value, self.ui.statusLabel.text = int(100 * h.progress.fraction), h.progress.message
            self._status(f"MuscleSAM learning: {h.progress.message}")
        if h.running:
            return qt.QTimer.singleShot(300, self._pollLearning)
        self._status("")
        self.fillSelectors()  # the new ensemble is in the user's manifest now
        (slicer.util.infoDisplay if h.result else slicer.util.errorDisplay)(
            f"New ensemble {h.result['name']}: before/after in {h.result['report']}" if h.result else f"Learning: {h.error}")


class MuscleSAMModuleLogic(ScriptedLoadableModuleLogic):
    """The module's parameter node, Segment Editor node and user folder, plus the scene bridge (created on first
    use, after the dependency check). Not named MuscleSAMLogic: that is the bridge's class."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "MuscleSAM"  # the base class derives it from the class name (parameter node lookup)
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

    @staticmethod
    def dataFolder():
        """The user's MuscleSAM folder (learned ensembles, runs): chosen in the panel, else beside Slicer's settings."""
        default = os.path.join(os.path.dirname(slicer.app.slicerUserSettingsFilePath), "MuscleSAM")
        return str(qt.QSettings().value("MuscleSAM/DataFolder", default) or default)

    @staticmethod
    def setDataFolder(folder):
        qt.QSettings().setValue("MuscleSAM/DataFolder", folder)

    def manifest(self):
        """The user's manifest (shipped ensembles + learned ones); the shipped one when the folder is not writable."""
        from MuscleSAMLib.scene_bridge import user_manifest

        try:
            return str(user_manifest(self.dataFolder()))
        except Exception as exc:
            logging.warning(f"MuscleSAM: {exc}; learned ensembles are not available")
            return None

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
    """Builds the real widget and drives it on the embedded sample (MuscleSAMSelfTest.py); skips without torch."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        import MuscleSAMSelfTest  # beside this file (the extension build installs it too)

        MuscleSAMSelfTest.drive_widget(self)
