"""MuscleSAM.ui + the parameter node: every binding must be one Slicer 5.6-5.10 accepts (slicer_ui_rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slicer_ui_rules import binding_problems

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "MuscleSAM" / "Resources" / "UI" / "MuscleSAM.ui"
MODULE = ROOT / "MuscleSAM" / "MuscleSAM.py"

GOOD = '''
from typing import Annotated
@parameterNodeWrapper
class P:
    inputVolume: vtkMRMLScalarVolumeNode
    kind: Annotated[str, Choice(["total", "epistemic"])] = "total"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
class W:
    def setup(self):
        self.ui.volumeSelector.enabled = True
'''
UI_TEXT = '''<ui version="4.0"><widget class="qMRMLWidget" name="Top">
 <widget class="qMRMLNodeComboBox" name="volumeSelector"><property name="SlicerParameterName" stdset="0"><string>inputVolume</string></property></widget>
 <widget class="QComboBox" name="kindComboBox"><property name="SlicerParameterName" stdset="0"><string>kind</string></property></widget>
 <widget class="ctkSliderWidget" name="opacitySlider"><property name="SlicerParameterName" stdset="0"><string>opacity</string></property></widget>
</widget></ui>'''


def _problems(tmp_path: Path, module_text: str, ui_text: str = UI_TEXT) -> list[str]:
    (tmp_path / "m.ui").write_text(ui_text)
    (tmp_path / "m.py").write_text(module_text)
    return binding_problems(tmp_path / "m.ui", tmp_path / "m.py")


def test_the_module_binds_only_what_slicer_accepts_and_uses_only_widgets_of_its_ui():
    assert binding_problems(UI, MODULE) == []


def test_a_correct_binding_passes(tmp_path):
    assert _problems(tmp_path, GOOD) == []


@pytest.mark.parametrize("old, new, expected", [
    ('Annotated[str, Choice(["total", "epistemic"])]', "str", "requires the Choice annotation"),
    ("Annotated[float, WithinRange(0.0, 1.0)]", "float", "float types is unbounded"),
    ("Annotated[float, WithinRange(0.0, 1.0)] = 0.5", "Annotated[float, WithinRange(0.0, 1.0)] = 2.0", "outside WithinRange"),
    ('= "total"', '= "aleatoric"', "not in Choice"),
    ("inputVolume: vtkMRMLScalarVolumeNode", "inputVolume: str", "not an MRML node type"),
    ("self.ui.volumeSelector", "self.ui.volumeSelectr", "self.ui.volumeSelectr is not a widget"),
])
def test_each_binding_slicer_refuses_is_reported(tmp_path, old, new, expected):
    assert old in GOOD
    problems = _problems(tmp_path, GOOD.replace(old, new))
    assert any(expected in p for p in problems), problems


def test_unknown_widget_classes_and_unknown_parameters_are_reported(tmp_path):
    problems = _problems(tmp_path, GOOD, UI_TEXT.replace('"QComboBox"', '"ctkComboBox"').replace(
        "<string>inputVolume</string>", "<string>inputVolumee</string>"))
    assert any("no GUI connector for widget class ctkComboBox" in p for p in problems), problems
    assert any("'inputVolumee' is not a parameter" in p for p in problems), problems


def test_shortcuts_do_not_shadow_slicers_keys_and_are_shown_on_their_buttons(tmp_path):
    from slicer_ui_rules import shortcut_problems

    assert shortcut_problems(UI, MODULE) == []
    old = MODULE.read_text().replace('"placeBoxButton": "A"', '"placeBoxButton": "B"')  # the old key: slice back
    (tmp_path / "m.py").write_text(old)
    assert any("B is already Slicer's key" in p for p in shortcut_problems(UI, tmp_path / "m.py"))
