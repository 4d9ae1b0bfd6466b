"""MuscleSAMTest's body: builds the real MuscleSAM widget in desktop Slicer and drives it end to end.

The scenario (embedded sample from Sample Data, the self-test's box ROIs, Segment, heatmap on the input's
grid, review table, next most uncertain, an edit, export) is MuscleSAMLib.scene_bridge.self_test_reference's;
its figures are compared with the committed MuscleSAM/Resources/Testing/demo_reference.json. Without torch
(the extensions factory) the test is skipped with a message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import unittest

import numpy
import slicer
import vtk


def drive_widget(test) -> None:
    """Run the scenario through the widget's own buttons; ``test`` is the ScriptedLoadableModuleTest."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("segment_anything") is None:
        message = "MuscleSAM self-test skipped: torch/segment-anything are not installed (press Install dependencies)"
        test.delayDisplay(message)
        raise unittest.SkipTest(message)
    import SampleData
    from MuscleSAM import registerSampleData
    from MuscleSAMLib.sample_data import sample_case
    from MuscleSAMLib.scene_bridge import self_test_reference as reference

    case = sample_case()
    name = f"{case.name} thigh Dixon"
    if SampleData.SampleDataLogic().sourceForSampleName(name) is None:
        registerSampleData()
    water, fat = SampleData.downloadSamples(name)  # the sample as a user picks it in Sample Data
    labels = slicer.util.loadLabelVolume(str(case.labels))
    slicer.util.selectModule("MuscleSAM")
    widget = slicer.util.getModuleWidget("MuscleSAM")
    test.assertTrue(widget.ui.segmentButton.enabled, "dependencies missing: " + widget.ui.dependencyLabel.text)
    widget._parameterNode.inputVolume, widget._parameterNode.fatVolume = water, fat
    bridge = widget.logic.bridge
    widget._boxes.extend(reference.scenario_rois(bridge, water, labels))  # as placed with 'Place box'
    widget.ui.segmentButton.click()  # loads the ensemble (no Initialize) and segments every placed box
    seg = widget._parameterNode.segmentation
    test.assertIsNotNone(seg, widget.ui.statusLabel.text)
    test.assertEqual(widget._boxes, [])  # used boxes are not predicted again
    table = widget.ui.reviewTableView.mrmlTableNode()
    heat = slicer.mrmlScene.GetFirstNodeByName(f"{water.GetName()} uncertainty")
    test.assertTrue(heat is not None and table is not None and table.GetNumberOfRows() > 0)
    test.assertTrue(numpy.allclose(_ijk_to_ras(water), _ijk_to_ras(heat), atol=1e-5))  # on the input's grid
    target = bridge.next_uncertain(water, jump=False)  # the first place of the review queue
    found = reference.stats(heat, table, target, widget.lastOutcome.changed_labels)
    problems = reference.differences(found, json.loads(reference.REFERENCE.read_text(encoding="utf-8")))
    test.assertEqual(problems, [], f"differs from {reference.REFERENCE} (regenerate: python -m "
                                   "MuscleSAMLib.scene_bridge.self_test_reference --write)")
    widget.ui.nextUncertainButton.click()  # the button jumps to the next one
    test.assertTrue(widget.ui.statusLabel.text.startswith("#2:"), widget.ui.statusLabel.text)
    widget.ui.muscleComboBox.currentIndex = widget.ui.muscleComboBox.findData(reference.MUSCLES[1])
    widget.ui.propagateButton.click()  # right after Segment: that muscle's boxes there are used
    test.assertNotIn("no box", widget.ui.statusLabel.text)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    edited = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, water)
    edited[:] = 0  # the user erases one muscle
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, seg, segment_id, water)
    widget.ui.exportDirectoryButton.directory = tempfile.mkdtemp()
    widget.ui.exportButton.click()
    folder = bridge.bundle_folder(widget.ui.exportDirectoryButton.directory, water.GetName())
    test.assertTrue(os.path.isfile(os.path.join(folder, "corrected_labels.seg.nrrd")), widget.ui.statusLabel.text)
    test.assertTrue(json.loads(open(os.path.join(folder, "report.json")).read()))
    test.delayDisplay("MuscleSAM self-test passed")


def _ijk_to_ras(node) -> numpy.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)
