"""Write corrected muscle labels as a DICOM Segmentation (SEG) object that references its MR series.

Used when the input was a DICOM series, so PACS viewers and other DICOM tools show the muscles on the
original images. Built with highdicom (standard-conformant SEG encoding); the source files are read
with pydicom headers only after the pixels matched the image MuscleSAM segmented.

Conventions
-----------
* One frame per source image, BINARY segmentation, one segment per muscle present in the labels
  (segment numbers 1..N in label order; the label value and the muscle name are in the segment label
  and description). Empty frames are omitted (highdicom's default).
* Coding: category SCT 91723000 "Anatomical Structure", type SCT 127954009 "Skeletal muscle",
  anatomic region SCT 68367000 "Thigh" (codes from pydicom's DICOM dictionary; the category is spelled out
  because pydicom 2.4, which Slicer 5.6/5.8 ship, finds two codes under its name). The individual thigh
  muscles have no code in that dictionary, so the muscle is named in ``SegmentLabel``, not coded.
* Algorithm type SEMIAUTOMATIC: a model's prediction reviewed and edited by a person.
* Each source file is matched to a slice of the image by its ImagePositionPatient (not by file order);
  a series whose files do not match the image's slices is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_path
from ..errors import InputError
from ..version import __version__
from ..volumes import Volume, image_like

SEG_MODALITY_SERIES_NUMBER = 9901  # a high series number, as viewers list derived series after the source


def _match_slices(datasets: Sequence, reference: Volume, files: Sequence[Path]) -> list[int]:
    """Stored slice index k of each dataset, from its ImagePositionPatient; refuses a mismatch."""
    image = reference.image
    size = image.GetSize()
    ks = []
    for ds, f in zip(datasets, files):
        ipp = getattr(ds, "ImagePositionPatient", None)
        if ipp is None:
            raise InputError(f"{f}: DICOM file has no ImagePositionPatient; cannot place it on the image")
        index = image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in ipp))
        k = int(round(index[2]))
        if abs(index[0]) > 0.01 or abs(index[1]) > 0.01 or abs(index[2] - k) > 0.01 or not 0 <= k < size[2]:
            raise InputError(f"{f}: DICOM slice position {list(map(float, ipp))} is not a slice of the segmented image "
                             f"{reference.source}; export DICOM SEG only from the series that was segmented")
        if (int(ds.Rows), int(ds.Columns)) != (size[1], size[0]):
            raise InputError(f"{f}: DICOM slice is {ds.Rows}x{ds.Columns}, the image slices are {size[1]}x{size[0]}")
        ks.append(k)
    if sorted(ks) != list(range(size[2])):
        raise InputError(f"{reference.source}: the DICOM files cover slices {sorted(set(ks))}, not every one of the "
                         f"image's {size[2]} slices exactly once")
    return ks


def write_dicom_seg(labels_canonical: np.ndarray, reference: Volume, source_files: Sequence[str | os.PathLike],
                    path: str | os.PathLike, names: Mapping[int, dict], series_description: str = "MuscleSAM muscles") -> Path:
    """Write ``labels_canonical`` (canonical orientation, on ``reference``'s grid) as a DICOM SEG at ``path``.

    ``source_files``: the DICOM files of the segmented series (any order); ``names``: label ->
    {"name", "abbrev"} (Resources/muscle_labels.json). Written atomically; returns ``path``.
    """
    import highdicom as hd  # noqa: PLC0415 - only when a DICOM series is exported
    import pydicom  # noqa: PLC0415
    from pydicom.sr.codedict import codes  # noqa: PLC0415
    from pydicom.sr.coding import Code  # noqa: PLC0415

    anatomical_structure = Code("91723000", "SCT", "Anatomical Structure")  # codes.SCT.AnatomicalStructure on pydicom 3

    files = [Path(f) for f in source_files]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise InputError(f"DICOM source files not found: {', '.join(missing[:3]) or 'none given'}; keep the series "
                         "that was segmented in place to export DICOM SEG")
    try:
        datasets = [pydicom.dcmread(str(f)) for f in files]
    except Exception as exc:  # pydicom raises several types for a broken file
        raise InputError(f"cannot read the DICOM source series ({exc})") from None
    ks = _match_slices(datasets, reference, files)
    stored = sitk.GetArrayFromImage(image_like(labels_canonical.astype(np.uint8), reference))  # (k, rows, cols)
    present = [int(v) for v in np.unique(stored) if v != 0]
    if not present:
        raise InputError("the corrected segmentation is empty: nothing to write as DICOM SEG")
    frames = np.zeros((len(datasets), *stored.shape[1:]), np.uint8)
    descriptions = []
    algorithm = hd.AlgorithmIdentificationSequence(name="MuscleSAM", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    for number, label in enumerate(present, start=1):
        info = names.get(label, {})
        for i, k in enumerate(ks):
            frames[i][stored[k] == label] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=f"{info.get('name', f'label {label}')} (label {label})",
            segmented_property_category=anatomical_structure,
            segmented_property_type=codes.SCT.SkeletalMuscle,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=hd.UID(),
            tracking_id=f"MuscleSAM {info.get('abbrev', label)}", anatomic_regions=[codes.SCT.Thigh]))
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_MODALITY_SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="MuscleSAM project",
            manufacturer_model_name="MuscleSAM", software_versions=__version__, device_serial_number="none",
            series_description=series_description)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"the DICOM source series cannot carry a SEG ({exc}); export the NIfTI/.seg.nrrd instead") from None
    dest = Path(path)
    with atomic_path(dest) as tmp:
        seg.save_as(str(tmp))
    return dest
