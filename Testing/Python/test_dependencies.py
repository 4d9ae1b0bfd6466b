"""The desktop module's dependency rules (scene_bridge.dependencies): floors, ceilings, Slicer's packages kept."""

from __future__ import annotations

import pytest

from MuscleSAMLib.scene_bridge import dependencies as D


@pytest.fixture
def versions(monkeypatch):
    """Pretend these distributions are installed at these versions (None: not installed)."""
    table: dict[str, str | None] = {}
    real = D.installed_version
    monkeypatch.setattr(D, "installed_version", lambda dist: table[dist] if dist in table else real(dist))
    return table


def test_torch_and_torchvision_are_required_with_floors():
    pips = {r.dist: r.pip for r in D.all_requirements()}
    assert pips["torch"].startswith("torch>=2.1") and "<3" in pips["torch"]
    assert "torchvision" in pips and "segment-anything" in pips and "highdicom" in pips


def test_a_version_below_the_floor_is_upgraded(versions):
    versions["torch"] = "2.0.1+cpu"
    assert "torch" in [r.dist for r in D.missing_requirements()]
    versions["torch"] = "2.1.0+cu121"
    assert "torch" not in [r.dist for r in D.missing_requirements()]


def test_slicers_own_packages_are_never_installed_or_replaced(versions, tmp_path):
    versions["numpy"] = "1.21.0"  # too old: the user needs a newer Slicer, not a pip install
    assert "numpy" not in [r.dist for r in D.missing_requirements()]
    assert [s.requirement.dist for s in D.unsupported_slicer_packages()] == ["numpy"]
    assert "Slicer 5.6 or later" in D.describe_missing()
    with pytest.raises(ValueError, match="belongs to Slicer"):
        D.pip_arguments(D.SLICER_PACKAGES[0], tmp_path / "c.txt")
    versions["numpy"] = "1.26.4"
    constraints = D.write_constraints(tmp_path / "constraints.txt").read_text().split()
    assert "numpy==1.26.4" in constraints
    args = D.pip_arguments(D.REQUIREMENTS[2], tmp_path / "constraints.txt")
    assert args == ["segment-anything>=1.0,<2", "-c", str(tmp_path / "constraints.txt")]


def test_highdicom_fits_the_pydicom_slicer_ships(versions):
    versions["pydicom"] = "2.4.4"  # Slicer 5.6-5.10
    assert [r.pip for r in D.all_requirements() if r.dist == "highdicom"] == ["highdicom>=0.22,<0.23"]
    versions["pydicom"] = "3.0.1"
    assert [r.pip for r in D.all_requirements() if r.dist == "highdicom"] == ["highdicom>=0.23,<1"]


def test_each_status_line_names_package_version_and_verdict(versions):
    versions["tqdm"] = "4.50.0"
    line = next(s.line() for s in D.check() if s.requirement.dist == "tqdm")
    assert line == "tqdm 4.50.0 (needs >=4.60,<5): too old"


def test_restart_is_needed_only_for_packages_already_imported():
    fake = D.Requirement("musclesam_never_imported_module", "x", "x>=1")
    assert D.restart_needed([fake]) is False
    assert D.restart_needed([D.SLICER_PACKAGES[0]]) is True  # numpy is imported in this process
