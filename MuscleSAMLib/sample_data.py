"""Locate the embedded sample case (real thigh Dixon MRI shipped in Resources/SampleData)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

from .paths import MUSCLE_LABELS_FILE, SAMPLE_DIR


@dataclass(frozen=True)
class SampleCase:
    """Paths of one embedded sample case."""

    name: str
    water: Path
    fat: Path
    labels: Path
    readme: Path

    def as_dict(self) -> dict[str, str]:
        """Plain dict of the paths (for JSON output)."""
        return {"name": self.name, "water": str(self.water), "fat": str(self.fat),
                "labels": str(self.labels), "readme": str(self.readme)}


def sample_case(name: str = "Thigh_001") -> SampleCase:
    """Return the embedded sample's paths; :class:`InputError` if the clone is missing them."""
    case = SampleCase(
        name=name,
        water=SAMPLE_DIR / f"{name}_water.nii.gz",
        fat=SAMPLE_DIR / f"{name}_fat.nii.gz",
        labels=SAMPLE_DIR / f"{name}_labels.nii.gz",
        readme=SAMPLE_DIR / "README.md",
    )
    for p in (case.water, case.fat, case.labels):
        if not p.is_file():
            raise InputError(f"{p}: embedded sample file is missing; re-clone the repository (it ships in git)")
    return case


def muscle_names(path: Path = MUSCLE_LABELS_FILE) -> dict[int, dict]:
    """Label value -> {"abbrev", "name", "color"} for the 11 thigh muscles (background excluded).

    Read once per file (cached; a fresh copy of the outer dict each call, so callers may add keys).
    """
    return dict(_read_label_table(str(Path(path).resolve())))


@functools.lru_cache(maxsize=8)
def _read_label_table(path: str) -> dict[int, dict]:
    raw = json.loads(Path(path).read_text())
    return {int(k): v for k, v in raw.items() if int(k) != 0}
