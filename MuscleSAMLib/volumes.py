"""Image volumes: safe reading, exact geometry, canonical axial orientation, atomic writing.

Conventions
-----------
* ``Volume.image`` is the SimpleITK image exactly as read (spacing, origin, direction untouched).
* The engine works on a *canonical* array: the image permuted and flipped (never resampled) to the
  DICOM orientation ``LPS``, so ``canonical[k]`` is an axial slice, rows run anterior -> posterior and
  columns run patient right -> left (radiological display). Which file axis is axial is decided from
  the direction matrix (the index axis closest to superior-inferior), not assumed to be the last one.
* Results are written back on the input's grid: :func:`write_like` undoes the permutation/flips and
  copies the original geometry, so a prediction overlays the input voxel for voxel.
"""

from __future__ import annotations

import errno
import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path, disk_nearly_full, write_failure
from .errors import GeometryError, InputError, OutputWriteError, warn_input
from .nifti_header import NiftiHeader, missing_spacing, parse_nifti_header, transform_disagreement

sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's raw warnings: the checks here say it in one line instead

CANONICAL_ORIENTATION = "LPS"
LPS_RAS_FLIP = (-1.0, -1.0, 1.0)  # LPS <-> RAS: negate x and y (the same flip both ways)
MAX_VOXELS = 512 * 1024 * 1024  # refuse larger images before allocating (2 GB of float32)

_VECTOR_OR_COMPLEX = {
    sitk.sitkComplexFloat32,
    sitk.sitkComplexFloat64,
}


@dataclass(frozen=True)
class Volume:
    """A 3D scalar image plus where it came from. Build with :func:`read_volume` or :func:`volume_from_array`."""

    image: sitk.Image
    source: str = "<memory>"
    _canonical: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def orientation(self) -> str:
        """Three-letter DICOM orientation of the stored index axes (e.g. ``LPS``, ``RAS``)."""
        return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.image.GetDirection())

    @property
    def canonical_image(self) -> sitk.Image:
        """The image permuted/flipped to ``LPS`` (exact, no interpolation); cached."""
        if "image" not in self._canonical:
            self._canonical["image"] = sitk.DICOMOrient(self.image, CANONICAL_ORIENTATION)
        return self._canonical["image"]

    @property
    def canonical_array(self) -> np.ndarray:
        """float32 array (slices, rows, cols) in canonical orientation; axial slices on axis 0."""
        if "array" not in self._canonical:
            arr = sitk.GetArrayFromImage(self.canonical_image).astype(np.float32, copy=False)
            arr.setflags(write=False)
            self._canonical["array"] = arr
        return self._canonical["array"]

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical array axes (slice, row, col)."""
        sx, sy, sz = self.canonical_image.GetSpacing()
        return (sz, sy, sx)

    @property
    def axial_axis(self) -> int:
        """Numpy axis of ``sitk.GetArrayFromImage(image)`` that runs superior-inferior."""
        return axial_array_axis(self.image.GetDirection())

    def same_grid(self, other: "Volume", tol: float = 1e-4) -> bool:
        """True when both images share size, spacing, origin and direction (within ``tol``)."""
        return same_grid(self.image, other.image, tol)

    def canonical_index_of(self, index_xyz: np.ndarray) -> np.ndarray:
        """Map continuous indices (N, 3) in the *stored* image (i, j, k) to canonical (col, row, slice)."""
        pts = np.atleast_2d(np.asarray(index_xyz, dtype=np.float64))
        out = np.empty_like(pts)
        for n, p in enumerate(pts):
            phys = self.image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in p))
            out[n] = self.canonical_image.TransformPhysicalPointToContinuousIndex(phys)
        return out

    def canonical_index_of_physical(self, points_lps: np.ndarray) -> np.ndarray:
        """Physical LPS points (N, 3) in mm -> continuous canonical indices (N, 3) as (col, row, slice)."""
        pts = np.atleast_2d(np.asarray(points_lps, dtype=np.float64))
        img = self.canonical_image
        return np.array([img.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in p)) for p in pts])

    def physical_of_canonical_index(self, col: float, row: float, slice_: float) -> np.ndarray:
        """Physical LPS point (3,) in mm of a continuous canonical index (col, row, slice)."""
        point = self.canonical_image.TransformContinuousIndexToPhysicalPoint((float(col), float(row), float(slice_)))
        return np.asarray(point, dtype=np.float64)


def lps_ras(points: np.ndarray) -> np.ndarray:
    """Physical points (..., 3) from LPS to RAS or back (x and y negated; its own inverse): THE conversion."""
    return np.asarray(points, dtype=np.float64) * LPS_RAS_FLIP


def axial_array_axis(direction: tuple[float, ...] | np.ndarray) -> int:
    """Return the numpy array axis (0, 1 or 2 of GetArrayFromImage's (k, j, i) order) closest to S-I.

    ``direction`` is ITK's row-major 3x3 direction matrix; column c is the physical (LPS) direction of
    index axis c. The axial (slice) axis is the index axis with the largest |S| component.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    itk_axis = int(np.argmax(np.abs(d[2, :])))
    return 2 - itk_axis


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True when two images share size, spacing, origin and direction within ``tol`` (mm / cosine)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol, rtol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 100, rtol=0)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol, rtol=0)
    )


def read_volume(path: str | os.PathLike, *, max_voxels: int = MAX_VOXELS, allow_labels: bool = False,
                series: str | None = None) -> Volume:
    """Read a 3D scalar image (NIfTI, NRRD, MHA, or a DICOM series folder) with checks.

    Raises :class:`InputError` with a one-line message naming the file for: a missing file, an
    unreadable/corrupt/truncated file, a 2D or 4D image, vector or complex pixels, more than
    ``max_voxels`` voxels (checked from the header, before the pixels are read), NaN or inf voxels,
    a NIfTI without slice spacing, a DICOM folder with several series and no ``series`` chosen (UID or
    description; sub-folders are searched), a DICOM series with unevenly spaced slices. A stream
    (``<(...)`` process substitution) is read once into a temporary file.
    """
    p = Path(path)
    if _is_stream(p):
        return _read_stream(p, max_voxels=max_voxels, allow_labels=allow_labels)
    try:
        found = p.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise InputError(f"{str(p)[:200]}: cannot access ({exc.strerror}); check the path") from None
    if not found:
        raise InputError(f"{p}: file not found")
    reader = sitk.ImageFileReader()
    try:
        if p.is_dir():
            files = [str(f) for f in dicom_series_files(p, series)]
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            size = (*reader.GetSize()[:2], len(files))
            _check_header(p, size, reader.GetNumberOfComponents(), reader.GetPixelID(), max_voxels)
            series_reader = sitk.ImageSeriesReader()
            series_reader.SetFileNames(files)
            image = series_reader.Execute()
        else:
            if p.stat().st_size == 0:
                raise InputError(f"{p}: file is empty")
            reader.SetFileName(str(p))
            reader.ReadImageInformation()
            _check_header(p, reader.GetSize(), reader.GetNumberOfComponents(), reader.GetPixelID(), max_voxels)
            header = _check_file_holds_pixels(p, reader)
            if header is not None and missing_spacing(header):
                raise InputError(f"{p}: the header has {missing_spacing(header)} (no voxel size along that axis; it would be "
                                 "read as 1 mm and every volume would be wrong); fix the header's voxel size")
            image = reader.Execute()
            disagreement = transform_disagreement(header, image) if header is not None else None
            if disagreement:
                warn_input(f"{p}: {disagreement}")
    except InputError:
        raise
    except RuntimeError as exc:
        raise InputError(f"{p}: cannot read image (corrupt, truncated or unsupported format): {_itk_reason(exc)}") from None
    arr = sitk.GetArrayViewFromImage(image)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{p}: image has {bad} NaN/inf voxels; fix or mask them before segmentation")
    if arr.dtype.kind == "f" and arr.size and float(np.abs(arr).max()) > FLOAT32_SAFE:
        image = _scaled_to_float32(p, image, float(np.abs(arr).max()))
        arr = sitk.GetArrayViewFromImage(image)
    if not allow_labels and arr.size and arr.max() == arr.min():
        raise InputError(f"{p}: image is constant (every voxel = {arr.flat[0]}); nothing to segment")
    _check_has_axial_slices(p, image)
    return Volume(image=image, source=str(p))


def single_non_axial_plane(image: sitk.Image) -> str | None:
    """``sagittal`` or ``coronal`` when ``image`` is one slice of that plane (no axial slice to draw a box
    on), else None. A single axial slice is a volume of one slice."""
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    along = {int(np.argmax(np.abs(d[:, a]))): image.GetSize()[a] for a in range(3)}  # physical axis -> size (no copy)
    if along.get(0, 2) < 2:  # one voxel from patient right to left
        return "sagittal"
    return "coronal" if along.get(1, 2) < 2 else None


def _check_has_axial_slices(p: Path, image: sitk.Image) -> None:
    """Refuse a single sagittal or coronal slice (see :func:`single_non_axial_plane`)."""
    plane = single_non_axial_plane(image)
    if plane is not None:
        raise InputError(f"{p}: a single {plane} slice (size {image.GetSize()}) has no axial slice to draw "
                         "a box on; use the axial images")


def dicom_series_files(folder: str | os.PathLike, series: str | None = None) -> list[Path]:
    """The files of the chosen DICOM series in ``folder`` (see :mod:`dicom_series`), in slice order, after
    checking their spacing: what :func:`read_volume` reads."""
    from .dicom_series import check_slice_spacing, select_series

    chosen = select_series(folder, series)
    check_slice_spacing(folder, chosen.files)
    return [Path(f) for f in chosen.files]


def _check_header(p: Path, size: tuple[int, ...], components: int, pixel_id: int, max_voxels: int) -> None:
    if len(size) != 3:
        raise InputError(f"{p}: expected a 3D image, got {len(size)}D with size {tuple(size)}")
    if min(size) < 1:
        raise InputError(f"{p}: image has an empty axis, size {tuple(size)}")
    if components != 1 or pixel_id in _VECTOR_OR_COMPLEX:
        raise InputError(f"{p}: expected a scalar image, got {components}-component / complex pixels")
    n = int(np.prod([int(s) for s in size[:3]], dtype=np.int64))
    if n > max_voxels:
        raise InputError(f"{p}: image has {n} voxels {tuple(size)}, above the limit of {max_voxels}; crop or downsample it")


_UNCOMPRESSED_SINGLE_FILE = (".nii", ".mha", ".nrrd")
FLOAT32_SAFE = 1e30  # larger magnitudes overflow float32 in the engine's arithmetic (canonical arrays are float32)


def _scaled_to_float32(p: Path, image: sitk.Image, peak: float) -> sitk.Image:
    """A float64 image with huge values, divided by a power of two (exact) so the engine's float32 holds it.

    Intensities are only used relative to each other (normalisation, fat fraction of a pair scaled alike)."""
    exponent = int(np.ceil(np.log2(peak / FLOAT32_SAFE * 1e6)))
    warn_input(f"{p}: values up to {peak:.3g} do not fit 32-bit floats; intensities divided by 2^{exponent} "
               "(shapes, volumes and fat fractions of a pair scaled alike are unchanged)")
    out = sitk.Cast(image, sitk.sitkFloat64) * float(2.0 ** -exponent)
    out.CopyInformation(image)
    return out


def _is_stream(p: Path) -> bool:
    """A pipe or character device (e.g. ``/dev/fd/63`` from ``<(...)``): no size, no seeking, no file name."""
    import stat

    try:
        mode = os.stat(p).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


_MAGIC = ((b"\x1f\x8b", ".nii.gz"), (b"NRRD", ".nrrd"), (b"ObjectType", ".mha"), (b"NDims", ".mha"))


def _read_stream(p: Path, **kw) -> Volume:
    """Copy a stream to a temporary file named after its content's format, read it, and name the stream."""
    import shutil
    import tempfile

    with open(p, "rb") as src:
        head = src.read(352)
        if not head:
            raise InputError(f"{p}: the stream is empty (did the command feeding it fail?)")
        suffix = next((s for m, s in _MAGIC if head.startswith(m)), None)
        if suffix is None and len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
            suffix = ".nii"
        if suffix is None:
            raise InputError(f"{p}: stream is not a NIfTI, NRRD or MHA image; give the image file itself")
        with tempfile.TemporaryDirectory(prefix="musclesam-stream-") as tmp:
            copy = Path(tmp) / f"stream{suffix}"
            with open(copy, "wb") as dst:
                dst.write(head)
                shutil.copyfileobj(src, dst)
            vol = read_volume(copy, **kw)
            vol.image  # read fully before the temporary file goes
    return Volume(image=vol.image, source=str(p))


def _check_file_holds_pixels(p: Path, reader: sitk.ImageFileReader) -> NiftiHeader | None:
    """Refuse a truncated uncompressed file: it must be at least as large as its pixel data. Returns the
    NIfTI header when the file is one (for the spacing and transform checks).

    ITK pads a short uncompressed read with garbage instead of failing, so the size is checked from
    the header before reading. Compressed files fail in the decompressor and need no check here.
    """
    n_voxels = int(np.prod(reader.GetSize(), dtype=np.int64))
    bytes_per_voxel = sitk.Image(1, 1, reader.GetPixelID()).GetSizeOfPixelComponent() * reader.GetNumberOfComponents()
    suffix = p.suffix.lower()
    if suffix == ".gz":
        size = _gzip_payload_size(p)
        with gzip.open(p, "rb") as fh:
            head = fh.read(4096)
    elif suffix in _UNCOMPRESSED_SINGLE_FILE and not _header_says_compressed(p):
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(4096)
    else:
        return None
    header = parse_nifti_header(head)
    if header is not None and header.bitpix > 0:  # stored type: ITK reports the type after scl_slope/scl_inter
        bytes_per_voxel = max(1, header.bitpix // 8) * reader.GetNumberOfComponents()
    needed = n_voxels * bytes_per_voxel + _header_length(head)
    if size < needed:
        raise InputError(f"{p}: file is truncated ({size} bytes of data, header and pixels need {needed})")
    return header


def _header_length(head: bytes) -> int:
    """Bytes before the pixel data, from the file's first bytes (NIfTI-1/2, MHA, NRRD); 0 if unknown."""
    for order in ("<", ">"):
        if len(head) >= 112 and struct.unpack(order + "i", head[:4])[0] == 348:
            return int(struct.unpack(order + "f", head[108:112])[0])
        if len(head) >= 176 and struct.unpack(order + "i", head[:4])[0] == 540:
            return int(struct.unpack(order + "q", head[168:176])[0])
    for marker in (b"ElementDataFile = LOCAL\n", b"ElementDataFile = LOCAL\r\n", b"\n\n"):
        at = head.find(marker)
        if at >= 0 and (marker != b"\n\n" or head.startswith(b"NRRD")):
            return at + len(marker)
    return 0


def _gzip_payload_size(p: Path) -> int:
    """Decompressed size of a gzip file; a truncated or corrupt stream raises :class:`InputError`.

    ITK zero-fills a truncated .nii.gz silently, so the stream (and its CRC) is verified here.
    """
    total = 0
    try:
        with gzip.open(p, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{p}: file is truncated or corrupt (gzip stream: {exc})") from None
    return total


def _header_says_compressed(p: Path) -> bool:
    if p.suffix.lower() not in (".mha", ".nrrd"):
        return False
    with open(p, "rb") as fh:
        head = fh.read(4096).lower()
    return b"compresseddata = true" in head or b"encoding: gz" in head or b"encoding: gzip" in head or b"encoding: bz" in head


def _itk_reason(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def read_dixon_pair(fat_path: str | os.PathLike, water_path: str | os.PathLike, *, fat_series: str | None = None,
                    water_series: str | None = None) -> tuple[Volume, Volume]:
    """Read a Dixon fat/water pair and check both share one grid (else :class:`GeometryError`); a pair
    that looks implausible (see :mod:`dixon_checks`) gets an :class:`~MuscleSAMLib.errors.InputWarning`."""
    from .dixon_checks import warn_if_implausible

    fat = read_volume(fat_path, series=fat_series)
    water = read_volume(water_path, series=water_series)
    check_same_grid(fat, water, "fat image", "water image")
    warn_if_implausible(fat, water)
    return fat, water


def check_same_grid(a: Volume, b: Volume, what_a: str = "image", what_b: str = "other image") -> None:
    """Raise :class:`GeometryError` naming both files when two volumes are on different grids."""
    if a.same_grid(b):
        return
    ia, ib = a.image, b.image
    for name, va, vb in (
        ("size", ia.GetSize(), ib.GetSize()),
        ("spacing", ia.GetSpacing(), ib.GetSpacing()),
        ("origin", ia.GetOrigin(), ib.GetOrigin()),
        ("direction", ia.GetDirection(), ib.GetDirection()),
    ):
        if _plain(va) != _plain(vb):
            raise GeometryError(
                f"{what_a} {a.source} and {what_b} {b.source} are on different grids ({name} "
                f"{_plain(va)} vs {_plain(vb)}); resample one onto the other first"
            )
    raise GeometryError(f"{what_a} {a.source} and {what_b} {b.source} are on different grids")


MAX_LABEL_VALUES = 32  # an integer image with no more distinct values than this is a label map, not an MRI


def label_map_reason(volume: Volume) -> str | None:
    """Why ``volume`` looks like a label map rather than an image to segment (None when it does not)."""
    arr = volume.canonical_array
    values = np.unique(arr.ravel()[:: max(1, arr.size // 4_000_000)])
    if values.size > MAX_LABEL_VALUES or not np.all(values == np.round(values)):
        return None
    return (f"{volume.source} holds only {values.size} distinct values ({', '.join(str(int(v)) for v in values[:12])}"
            f"{', ...' if values.size > 12 else ''}): it looks like a label map, not an MRI image; open the water image "
            "(corrected labels are exported, not opened)")


def _plain(values: tuple) -> tuple:
    """Numbers as Python ints/floats rounded to 4 decimals (numpy 2 prints ``np.int64(512)`` otherwise)."""
    return tuple(int(v) if float(v).is_integer() else round(float(v), 4) for v in values)


def volume_from_array(array_kji: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                      origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                      direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1), source: str = "<memory>") -> Volume:
    """Wrap a numpy array in GetArrayFromImage order (k, j, i) with ITK geometry (spacing in i, j, k)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection(tuple(float(d) for d in direction))
    return Volume(image=img, source=source)


def image_like(canonical_array: np.ndarray, reference: Volume) -> sitk.Image:
    """Turn a canonical-orientation array into an image on ``reference``'s exact stored grid."""
    canon = reference.canonical_image
    expected = tuple(reversed(canon.GetSize()))
    if tuple(canonical_array.shape) != expected:
        raise GeometryError(f"result shape {canonical_array.shape} does not match {reference.source} canonical shape {expected}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(canonical_array))
    img.CopyInformation(canon)
    back = sitk.DICOMOrient(img, reference.orientation)
    back.CopyInformation(reference.image)  # exact original geometry (no float drift)
    return back


def write_image_atomic(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` atomically (see :mod:`atomic`); errors name the path."""
    dest = Path(path)
    with atomic_path(dest) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress)
            _verify_written(tmp)
        except (RuntimeError, InputError) as exc:
            if disk_nearly_full(tmp):  # checked before the partial file is removed; ITK passes no errno on
                raise write_failure(dest.parent, errno.ENOSPC, None) from None
            reason = _itk_reason(exc) if isinstance(exc, RuntimeError) else str(exc)
            raise OutputWriteError(f"{dest}: cannot write image ({reason})") from None
    return dest


def _verify_written(p: Path) -> None:
    """Refuse a file ITK wrote short: its NIfTI writer reports a short write on stderr only, without failing.

    gzip files: the whole stream and its CRC; uncompressed: at least header plus pixels; NRRD/MHA with
    compressed data: read back (a cut stream fails in the decompressor).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    reader.ReadImageInformation()
    if p.suffix.lower() != ".gz" and _header_says_compressed(p):
        reader.Execute()
    else:
        _check_file_holds_pixels(p, reader)


def write_like(canonical_array: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write a canonical-orientation result on ``reference``'s grid (see :func:`image_like`), atomically."""
    return write_image_atomic(image_like(canonical_array, reference), path)
