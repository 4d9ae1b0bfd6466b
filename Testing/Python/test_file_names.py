"""The one file-name rule (MuscleSAMLib.file_names): bundle folders from DICOM/volume names work on Windows too."""

from __future__ import annotations

import pytest

from MuscleSAMLib.file_names import safe_file_name


@pytest.mark.parametrize("text, expected", [
    ("Thigh_001_water", "Thigh_001_water"),
    ("3: AX T1 DIXON W", "3_AX_T1_DIXON_W"),  # a DICOM series name as Slicer's DICOM module names volumes
    ('a<b>c"d|e?f*g\\h/i', "a_b_c_d_e_f_g_h_i"),
    ("../../etc/cron.d/x", "_._etc_cron.d_x"),
    ("case.", "case"),  # Windows drops a trailing dot
    ("CON", "_CON"), ("nul.txt", "_nul.txt"), ("COM1", "_COM1"),
    ("...", "image"), ("", "image"),
])
def test_names_are_valid_file_names_on_every_os(text, expected):
    assert safe_file_name(text) == expected


def test_long_names_are_cut_and_the_fallback_is_used_when_nothing_is_left():
    assert len(safe_file_name("a" * 500)) == 100
    assert safe_file_name(":::", fallback="case") == "_" and safe_file_name("..", fallback="case") == "case"
