"""The one check that a volume is a muscle label map (corrected labels, a prediction, evaluation truth).

A label map holds whole numbers from the muscle table (``Resources/muscle_labels.json``) and 0 for
background. An MRI, a probability map or a map with other codes given in its place is refused with
one line naming the file, before any work (an MRI taken as labels would make one box per intensity).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .sample_data import muscle_names
from .volumes import Volume


def muscle_label_array(volume: Volume, what: str = "label map") -> np.ndarray:
    """``volume``'s canonical array as uint8 muscle labels; refuses non-integer values and values outside
    the muscle table (both named in the message)."""
    arr = volume.canonical_array
    frac = arr[np.abs(arr - np.rint(arr)) > 1e-3] if arr.size else arr
    if frac.size:
        raise InputError(f"{volume.source}: {what} is not a label map ({frac.size} voxels with non-integer values, "
                         f"e.g. {float(frac.flat[0]):.4g}: an image or a probability map?); give whole-number muscle labels")
    values = np.unique(np.rint(arr)).astype(np.int64)
    table = set(muscle_names())
    unknown = [int(v) for v in values if v != 0 and int(v) not in table]
    if unknown:
        many = len(values) > 64
        shown = ", ".join(str(v) for v in unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        hint = (f"{len(values)} distinct values: an image, not a label map?" if many
                else f"values {shown} are not in the muscle table 1-{max(table)} (Resources/muscle_labels.json)")
        raise InputError(f"{volume.source}: {what} has labels MuscleSAM does not know ({hint}); relabel them or give the label map")
    return np.rint(arr).astype(np.uint8)
