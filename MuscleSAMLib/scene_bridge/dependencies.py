"""Python packages the engine needs inside Slicer: check without importing, install only on request.

Standard library only, so the desktop module can check before anything heavy is imported. Installing
is the front end's job, on the MAIN thread and only from an explicit button (``slicer.util.pip_install``
creates Qt widgets; from a worker thread it hangs Slicer), torch through the PyTorch extension where
present. Requirements carry a floor and a ceiling.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    """One dependency: the module to import, the pip requirement, and how to install it."""

    module: str
    pip: str
    via: str = "pip"  # "pip", or "pytorch" (PyTorch extension's installTorch when available, else pip)


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "torch>=2.1,<3", via="pytorch"),
    Requirement("segment_anything", "segment-anything>=1.0,<2"),
    Requirement("safetensors", "safetensors>=0.4,<1"),
    Requirement("scipy", "scipy>=1.10,<2"),
    Requirement("SimpleITK", "SimpleITK>=2.2,<3"),
    Requirement("tqdm", "tqdm>=4.60,<5"),
    Requirement("matplotlib", "matplotlib>=3.6,<4"),  # imported by the engine's report writer
)


def missing_requirements() -> list[Requirement]:
    """The requirements whose module cannot be found (nothing is imported)."""
    return [r for r in REQUIREMENTS if importlib.util.find_spec(r.module) is None]


def describe_missing() -> str:
    """One line for the module panel ('' when nothing is missing)."""
    missing = missing_requirements()
    if not missing:
        return ""
    return "Missing Python packages: " + ", ".join(r.pip for r in missing) + ". Press 'Install dependencies'."
