"""Helpers shared by the tests (an ordinary module, importable from any test folder).

Test modules import these as ``from musclesam_test_helpers import ...``; conftest.py files hold only
fixtures and hooks (pytest caches every top-level conftest under one module name, so helpers there
would collide between Testing/Python and Testing/Browser).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]


def installed(distribution: str) -> bool:
    """True when pip's metadata says ``distribution`` is installed (whether or not it imports)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def import_declared(module: str, distribution: str) -> ModuleType:
    """``import module`` for a test module: skipped only when ``distribution`` is not installed at all.

    When it is installed (scripts/env.sh installs it from requirements/lock.txt) but the import fails,
    the install is broken: the tests FAIL with the import error instead of skipping silently (a suite
    that skips on CI proves nothing).
    """
    if not installed(distribution):
        pytest.skip(f"{distribution} is not installed (pip install it, or run scripts/test.sh)", allow_module_level=True)
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of an installed package is a broken install
        pytest.fail(f"{distribution} is installed but `import {module}` fails ({type(exc).__name__}: {exc}); "
                    "the install is broken: rebuild the environment (scripts/env.sh)", pytrace=False)


def oblique_direction(degrees: float = 12.0) -> tuple[float, ...]:
    """A rotation about the A-P axis by ``degrees`` then about S-I by half of it (row-major 3x3)."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return tuple((rz @ ry).ravel())


DIRECTIONS = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "oblique": oblique_direction(),
    # axial axis stored first: index i runs inferior->superior, j = L, k = P
    "axial_first": (0, 1, 0, 0, 0, 1, 1, 0, 0),
}


def make_image(array_kji: np.ndarray, direction, spacing=(0.8, 0.9, 5.0), origin=(-10.0, 20.0, 30.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(tuple(float(d) for d in direction))
    return img


def write_random_decoder_ensemble(folder: Path, members: int = 2, seed: int = 0, arch: str = "demo_xs",
                                  **spec_fields) -> Path:
    """A manifest + safetensors files for a random-weight ``decoder`` ensemble (tests only)."""
    import torch

    from MuscleSAMLib.models.architectures import build_sam
    from MuscleSAMLib.models.ensemble import synthetic_spec
    from MuscleSAMLib.models.manifest import WeightFile, replace_spec, save_manifest
    from MuscleSAMLib.models.safe_load import save_safetensors_atomic

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    base = None
    for m in range(members):
        torch.manual_seed(seed + m)
        state = build_sam(arch).state_dict()
        if base is None:
            enc = {k: v for k, v in state.items() if k.startswith("image_encoder.")}
            base = WeightFile("encoder.safetensors", folder / "encoder.safetensors",
                              save_safetensors_atomic(enc, folder / "encoder.safetensors"))
        head = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
        name = f"member{m}.safetensors"
        files.append(WeightFile(name, folder / name, save_safetensors_atomic(head, folder / name)))
    spec = synthetic_spec(arch, "decoder", name="random-test", **spec_fields)
    spec = replace_spec(spec, members=tuple(files), base=base, default=True, licence="test", version="0")
    save_manifest(folder / "manifest.json", [spec])
    return folder / "manifest.json"


def _mount_tmpfs(folder: Path, options: str) -> bool:
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, timeout=30)
    return done.returncode == 0


def unmount(folder: Path) -> None:
    """Undo :func:`small_disk` / :func:`read_only_folder` (lazy unmount: never blocks the test run)."""
    import subprocess

    subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def small_disk(folder: Path, size_kb: int) -> bool:
    """Mount a real ``size_kb`` file system at ``folder`` (tmpfs; needs root): writes past it fail with ENOSPC.

    Returns False when mounting is not permitted (the caller skips, saying why).
    """
    return _mount_tmpfs(folder, f"size={size_kb}k,mode=0777")


def fill_disk(folder: Path, leave_bytes: int) -> None:
    """Fill the file system holding ``folder`` until about ``leave_bytes`` are free."""
    import os

    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if free > leave_bytes:
        (folder / "filler.bin").write_bytes(b"\0" * (free - leave_bytes))


def read_only_folder(folder: Path) -> str:
    """Make ``folder`` unwritable for this process: chmod 0555, or (as root, where chmod does not bind) a
    read-only tmpfs mount. Returns "chmod" or "mount" (the caller must :func:`unmount` a mount); raises
    OSError when neither works."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o555)
    if not os.access(folder, os.W_OK):
        return "chmod"
    os.chmod(folder, 0o755)
    if _mount_tmpfs(folder, "ro,size=64k"):
        return "mount"
    raise OSError(f"cannot make {folder} read-only here (not root and chmod has no effect)")


class PickleTrap:
    """Unpickling this would create the file ``marker`` (stands for any code a pickle can run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.open, (self.marker, "w"))


def damage_ensemble(manifest: Path, change: str, marker: Path) -> Path:
    """Give the (random) ensemble of ``manifest`` one defect, in place; returns ``manifest``.

    ``change``: ``missing_member`` (member 1's file deleted), ``wrong_checksum`` (member 0's sha256
    zeroed), ``wrong_architecture`` (the entry claims demo_s at 256), ``pickled_code`` (member 0 becomes
    a .pth holding a :class:`PickleTrap` that would create ``marker``; its checksum is right).
    """
    import json
    import os

    doc = json.loads(manifest.read_text())
    entry = doc["ensembles"][0]
    if change == "missing_member":
        os.remove(manifest.parent / entry["members"][1]["file"])
    elif change == "wrong_checksum":
        entry["members"][0]["sha256"] = "0" * 64
    elif change == "wrong_architecture":
        entry["arch"] = "demo_s"
        entry["input_size"] = 256
    elif change == "pickled_code":
        import torch

        from MuscleSAMLib.models.safe_load import sha256_file

        evil = manifest.parent / "member0.pth"
        torch.save({"payload": PickleTrap(str(marker))}, evil)
        entry["members"][0] = {"file": "member0.pth", "sha256": sha256_file(evil)}
    else:
        raise ValueError(f"unknown change {change!r}")
    manifest.write_text(json.dumps(doc))
    return manifest


def scene_state(scene) -> dict:
    """What a user could lose: node IDs (class, name), a digest of every volume's voxels, and every
    segmentation's muscle labels (on its own volume's grid) and statuses. Needs slicer-core."""
    import hashlib

    import slicer

    from MuscleSAMLib.scene_bridge import segments as S
    from MuscleSAMLib.scene_bridge.mrml import VOLUME_ATTR, nodes_by_class

    state: dict = {}
    for n in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(n)
        state[node.GetID()] = (node.GetClassName(), node.GetName())
    for node in nodes_by_class(scene, "vtkMRMLVolumeNode"):
        image = node.GetImageData()
        scalars = image.GetPointData().GetScalars() if image is not None else None
        if scalars is None or scalars.GetNumberOfTuples() != np.prod(image.GetDimensions()):
            state[node.GetID() + " voxels"] = None if scalars is None else f"{scalars.GetNumberOfTuples()} values"
        else:
            data = np.ascontiguousarray(slicer.util.arrayFromVolume(node))
            state[node.GetID() + " voxels"] = hashlib.sha256(data.tobytes()).hexdigest()
    for seg in nodes_by_class(scene, "vtkMRMLSegmentationNode"):
        owner = scene.GetNodeByID(seg.GetAttribute(VOLUME_ATTR) or "")
        if owner is not None:
            state[seg.GetID() + " labels"] = S.read_labels(seg, owner).tobytes()
        state[seg.GetID() + " status"] = {lab: S.segment_status(seg, lab) for lab in S.muscle_segment_ids(seg)}
    return state


def write_recipe_volume(array: np.ndarray, path: Path) -> str:
    """A volume as a recipe config names it (NIfTI, 1.5 x 1.5 x 8 mm); returns the file name."""
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((1.5, 1.5, 8.0))
    sitk.WriteImage(img, str(path))
    return path.name


def two_recipe_subjects(folder: Path, prefix: str, seed: int) -> list[dict]:
    """Two small two-muscle phantom subjects written as NIfTI, as a recipe config lists them."""
    from MuscleSAMLib.phantoms import make_thigh_phantom

    subjects = []
    for i in range(2):
        ph = make_thigh_phantom(seed=seed + i, shape=(2, 96, 144), spacing=(8.0, 1.5, 1.5), muscles=(1, 2))
        stem = folder / f"{prefix.lower()}{i}"
        subjects.append({"name": f"{prefix}{i}",
                         "water": write_recipe_volume(ph.water.astype(np.float32), Path(f"{stem}_water.nii.gz")),
                         "fat": write_recipe_volume(ph.fat.astype(np.float32), Path(f"{stem}_fat.nii.gz")),
                         "labels": write_recipe_volume(ph.labels.astype(np.uint8), Path(f"{stem}_labels.nii.gz"))})
    return subjects
