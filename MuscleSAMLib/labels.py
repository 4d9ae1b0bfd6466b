"""Muscle labels as users write them: THE parser of a label value, abbreviation or name.

The table itself is ``Resources/muscle_labels.json`` (read by :func:`~MuscleSAMLib.sample_data.muscle_names`).
Boxes files, ROI attributes, the web page and the desktop module all name a muscle through
:func:`parse_label`, so each accepts the same spellings and refuses with the same message.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError
from .sample_data import muscle_names

UNKNOWN_HINT = "use 1-11 or an abbreviation such as 'VL'"


def label_lookup() -> dict[str, int]:
    """Map accepted label spellings (value, abbreviation, name; case-insensitive) to label values."""
    table: dict[str, int] = {}
    for value, info in muscle_names().items():
        table[str(value)] = value
        table[info["abbrev"].lower()] = value
        table[info["name"].lower()] = value
    return table


def parse_label(raw: Any) -> int:
    """The muscle label value of ``raw`` (3, "3", "VL", "vastus lateralis"); :class:`InputError` if none."""
    key = str(raw).strip().lower()
    table = label_lookup()
    if isinstance(raw, bool) or key not in table:
        raise InputError(f"unknown muscle label {raw!r}; {UNKNOWN_HINT}")
    return table[key]


def is_muscle_label(value: Any) -> bool:
    """True for an integer label value of the muscle table (what a canonical BoxPrompt must carry)."""
    import numpy as np  # noqa: PLC0415 - numpy integers count as integers

    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) in muscle_names()
