"""Where the clone's shipped files are: the one place each such path is written down."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = REPO_ROOT / "Resources"
SAMPLE_DIR = RESOURCES / "SampleData"
MUSCLE_LABELS_FILE = RESOURCES / "muscle_labels.json"
DEFAULT_MANIFEST = REPO_ROOT / "weights" / "manifest.json"  # the shipped ensembles (demo default)
