"""The Click tool of the MuscleSAM panel: Qt wiring only; every action is one call into the scene bridge.

With "Click (C)" down, Slicer stays in place mode on a fiducial node the bridge made; each point placed in the
axial view is one click on the chosen muscle ("Not muscle" checked or Shift held: a negative click), run as
the next main-loop step (never inside the markups event). "Undo click" takes back the muscle's last click on
the red view's slice; "Suggest next click" shows a yellow star at the most uncertain place of that muscle there.
"""

from __future__ import annotations

import qt
import slicer


class ClickTool:
    """Click, Undo click and Suggest next click of :class:`MuscleSAM.MuscleSAMWidget` (``widget``)."""

    def __init__(self, widget):
        self.widget = widget
        self.node, self.tag = None, None  # the click-taking fiducial node and its observer
        ui = widget.ui
        ui.clickToolButton.connect("toggled(bool)", self.onToggled)
        ui.undoClickButton.connect("clicked(bool)", self.onUndo)
        ui.suggestClickCheckBox.connect("toggled(bool)", lambda _on: self.refresh())
        ui.muscleComboBox.connect("currentIndexChanged(int)", lambda _i: self.refresh())

    @property
    def bridge(self):
        return self.widget.logic.bridge

    def onToggled(self, on):
        self.stop()
        if on:
            self.node = self.bridge.start_click_placement(slicer.mrmlScene)
            self.tag = self.node.AddObserver(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPointPlaced)

    def stop(self):
        """Leave place mode and drop the click-taking node (scene close, module exit, button up)."""
        if self.node is not None and self.tag is not None:
            self.node.RemoveObserver(self.tag)
        if self.node is not None:
            self.bridge.stop_click_placement(slicer.mrmlScene, self.node)
        self.node, self.tag = None, None
        if self.widget.ui.clickToolButton.checked:
            self.widget.ui.clickToolButton.checked = False

    def onPointPlaced(self, caller, event):
        qt.QTimer.singleShot(0, self.addPlacedClicks)  # out of the markups event before any MRML write

    def addPlacedClicks(self):
        node = self.node
        if node is None or node.GetNumberOfControlPoints() == 0:
            return
        ras = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(node.GetNumberOfControlPoints() - 1, ras)
        node.RemoveAllControlPoints()  # the click shows as the bridge's green + / red - marker instead
        shift = bool(qt.QApplication.keyboardModifiers() & qt.Qt.ShiftModifier)
        self.add(ras, not (self.widget.ui.negativeClickCheckBox.checked or shift))

    def add(self, ras, positive):
        """One click at world ``ras`` on the chosen muscle (the run's errors become a message)."""
        w = self.widget

        def click():
            w._stage = "click"
            return self.bridge.add_click(w._volume(), w._muscle(), ras, positive, w._parameterNode.segmentation,
                                         pump=w._pump)

        self.show(w._run(lambda: w._withFatImage(click), "Click"))

    def onUndo(self):
        w = self.widget

        def undo():
            w._stage = "undo click"
            return self.bridge.undo_click(w._volume(), w._muscle(), self.viewSlice(), w._parameterNode.segmentation,
                                          pump=w._pump)

        self.show(w._run(lambda: w._withFatImage(undo), "Undo click"))

    def show(self, outcome):
        if outcome is None:
            return
        self.widget._show(outcome.run, remember=[])  # (refreshes this tool) a click never moves where Propagate starts
        sign = "muscle" if outcome.positive else "not muscle"
        done = f"click {outcome.clicks} ({sign})" if outcome.added else f"click ({sign}) taken back, {outcome.clicks} left"
        kept = f"; {outcome.kept_edits} edited voxels kept" if outcome.kept_edits else ""
        caveat = f" {outcome.caveat}" if getattr(outcome, "caveat", "") else ""
        self.widget.ui.statusLabel.text = (f"{done} on slice {outcome.slice}: {outcome.changed_voxels} voxels "
                                           f"changed{kept}.{caveat}")

    def viewSlice(self):
        """The red (axial) view's slice, as the volume's own K index."""
        center = self.widget._redSliceCenter()
        if center is None:
            raise ValueError("no axial (Red) view: show one to undo a click there")
        return self.bridge.slice_of(self.widget._volume(), center)[0]

    def refresh(self):
        """Undo click's count and the suggestion marker for the chosen muscle on the red view's slice."""
        volume, w = self.widget._volume(), self.widget
        if volume is None or not w.logic.bridgeStarted or w._redSliceCenter() is None:
            return
        k, label = self.viewSlice(), w._muscle()
        n = len(self.bridge.clicks_on_slice(volume, k, label))
        w.ui.undoClickButton.text = f"Undo click ({n})"
        w.ui.undoClickButton.enabled = n > 0
        on = w.ui.suggestClickCheckBox.checked
        self.bridge.show_suggested_click(volume, label if on else None, k)
