"""Model layer: architectures, safe loading, manifest validation, LoRA equivalences, ensemble runtime.

Everything runs on tiny random models (a few hundred thousand parameters) so the file stays fast on a
2-core CPU; official layouts are sized on the meta device without allocating them.
"""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from MuscleSAMLib.errors import GeometryError, InputError, WeightsError
from MuscleSAMLib.models import (
    ARCHITECTURES,
    ArchSpec,
    Ensemble,
    LoRASpec,
    MemberLoRALinear,
    apply_lora,
    box_mask_prompt,
    build_sam,
    count_parameters,
    load_into,
    load_lora_state_dict,
    load_manifest,
    lora_member,
    lora_state_dict,
    manifest_hash,
    merge_lora,
    save_manifest,
    save_safetensors_atomic,
    sha256_file,
)
from MuscleSAMLib.models import safe_load
from MuscleSAMLib.models.ensemble import PromptHead
from MuscleSAMLib.slice_geometry import model_to_slice

TINY = ArchSpec.from_dict({"like": "demo_xs", "name": "tiny", "encoder_embed_dim": 32, "encoder_depth": 2,
                           "encoder_num_heads": 2, "encoder_global_attn_indexes": [1], "img_size": 64,
                           "patch_size": 8, "window_size": 4, "prompt_embed_dim": 32, "decoder_depth": 1,
                           "decoder_mlp_dim": 64, "decoder_num_heads": 2, "iou_head_hidden_dim": 32,
                           "mask_in_chans": 8})


def _slice(rows: int = 50, cols: int = 70, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((rows, cols)) * 255).astype(np.float32)


BOXES = np.array([[5.0, 4.0, 30.0, 40.0], [33.0, 10.0, 66.0, 45.0], [0.0, 0.0, 70.0, 50.0]])


# ------------------------------------------------------------------ architectures
def _meta_counts(name: str) -> tuple[float, float, float]:
    with torch.device("meta"):
        sam = build_sam(name)
    return (count_parameters(sam) / 1e6, count_parameters(sam.image_encoder) / 1e6,
            count_parameters(sam.mask_decoder) / 1e6)


def test_official_layouts_have_sam_parameter_counts():
    total, enc, dec = _meta_counts("vit_b")
    assert abs(total - 93.7) < 0.5 and abs(enc - 89.7) < 0.2 and abs(dec - 4.06) < 0.05
    assert abs(_meta_counts("vit_l")[0] - 312.3) < 1.0
    assert abs(_meta_counts("vit_h")[0] - 641.1) < 1.5
    assert _meta_counts("medsam")[0] == total
    for name in ("vit_b", "vit_l", "vit_h", "medsam"):
        a = ARCHITECTURES[name]
        assert a.img_size == 1024 and a.patch_size == 16 and a.window_size == 14 and a.lowres_size == 256
    assert ARCHITECTURES["medsam"].pixel_std == (255.0, 255.0, 255.0)


@pytest.mark.parametrize("name, lo, hi", [("demo_s", 5.5, 7.0), ("demo_xs", 2.5, 4.0)])
def test_demo_layouts_build_and_run(name, lo, hi):
    sam = build_sam(name)
    n = count_parameters(sam) / 1e6
    assert lo < n < hi
    a = ARCHITECTURES[name]
    with torch.inference_mode():
        emb = sam.image_encoder(torch.zeros(1, 3, a.img_size, a.img_size))
    assert emb.shape == (1, a.prompt_embed_dim, a.image_embedding_size, a.image_embedding_size)


def test_unknown_or_invalid_architecture():
    with pytest.raises(WeightsError, match="unknown architecture 'vit_x'.*demo_s.*vit_b"):
        build_sam("vit_x")
    with pytest.raises(WeightsError, match="not a multiple of patch_size"):
        ArchSpec("bad", 64, 2, 2, (1,), img_size=100, patch_size=16)
    with pytest.raises(WeightsError, match="unknown keys"):
        ArchSpec.from_dict({"like": "demo_xs", "embed": 3})
    assert ArchSpec.from_dict(TINY.to_dict()) == TINY


# ------------------------------------------------------------------ safe loading
@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_sam(TINY).state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_round_trip(tmp_path, tiny_state, suffix):
    p = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        digest = save_safetensors_atomic(tiny_state, p)
        assert digest == sha256_file(p) and [f.name for f in tmp_path.iterdir()] == ["w.safetensors"]
    else:
        torch.save({"model": tiny_state}, p)  # wrapped, as many training scripts save
    loaded = safe_load.load_state_dict(p, sha256_file(p))
    model = build_sam(TINY)
    load_into(model, loaded, what=str(p), arch="tiny")
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state[k])


def test_ddp_prefix_is_stripped(tmp_path, tiny_state):
    p = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_state.items()}}, p)
    assert set(safe_load.load_state_dict(p)) == set(tiny_state)


def test_wrong_checksum_is_refused_before_deserialising(tmp_path, tiny_state, monkeypatch):
    p = tmp_path / "w.safetensors"
    save_safetensors_atomic(tiny_state, p)
    actual = sha256_file(p)
    import safetensors.torch

    def boom(*a, **k):
        raise AssertionError("deserialised a file whose checksum was wrong")

    monkeypatch.setattr(safetensors.torch, "load_file", boom)
    monkeypatch.setattr(torch, "load", boom)
    with pytest.raises(WeightsError) as exc:
        safe_load.load_state_dict(p, "0" * 64)
    assert str(p) in str(exc.value) and actual in str(exc.value) and "0" * 64 in str(exc.value)


class _Trap:
    """Unpickling this would create a marker file (stands for any code a pickle can run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_code_carrying_pickle_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _Trap(str(marker))}, p)
    with pytest.raises(WeightsError, match="Python objects other than tensors"):
        safe_load.load_state_dict(p, sha256_file(p))  # right checksum: weights_only must stop it
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path, tiny_state):
    with pytest.raises(WeightsError, match="not found"):
        safe_load.load_state_dict(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="corrupt"):
        safe_load.load_state_dict(bad)
    good = tmp_path / "t.safetensors"
    save_safetensors_atomic(tiny_state, good)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        safe_load.load_state_dict(cut)
    notdict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], notdict)
    with pytest.raises(WeightsError, match="state dict"):
        safe_load.load_state_dict(notdict)


def test_wrong_architecture_names_keys(tiny_state):
    state = dict(tiny_state)
    state.pop("mask_decoder.iou_token.weight")
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    state["image_encoder.pos_embed"] = torch.zeros(1, 3, 3, 32)
    with pytest.raises(WeightsError) as exc:
        load_into(build_sam(TINY), state, what="ckpt.pth", arch="tiny")
    msg = str(exc.value)
    assert "checkpoint ckpt.pth does not match architecture tiny" in msg
    assert "mask_decoder.iou_token.weight" in msg and "mask_decoder.extra.weight" in msg
    assert "image_encoder.pos_embed (1, 3, 3, 32) vs (1, 8, 8, 32)" in msg
    with pytest.raises(WeightsError, match="missing|shape"):
        load_into(build_sam("demo_xs"), tiny_state, what="tiny.safetensors", arch="demo_xs")


# ------------------------------------------------------------------ manifest
def _entry(**kw):
    e = {"name": "demo", "kind": "decoder", "arch": "demo_xs", "input_size": 256,
         "normalisation": {"pixel_mean": [0, 0, 0], "pixel_std": [255, 255, 255]},
         "prompt_geometry": "slice", "box_mask_prompt": True, "licence": "CC-BY-4.0", "version": "1.0",
         "base": {"file": "demo/base.safetensors", "sha256": "a" * 64},
         "members": [{"file": "demo/m0.safetensors", "sha256": "b" * 64}]}
    e.update(kw)
    return e


def _write_manifest(tmp_path: Path, entries, **top) -> Path:
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps({"format_version": 1, "ensembles": entries, **top}))
    return p


def test_manifest_parses_and_resolves(tmp_path):
    custom = _entry(name="custom", kind="full", arch=TINY.to_dict(), input_size=64, default=True, base=None,
                    prompt_geometry="box_crop", crop_margin=0.2, training={"steps": 10})
    lora = _entry(name="lo", kind="lora", lora={"rank": 4, "alpha": 8})
    p = _write_manifest(tmp_path, [_entry(), custom, lora])
    m = load_manifest(p)
    assert m.names == ["demo", "custom", "lo"] and m.sha256 == manifest_hash(p) == sha256_file(p)
    assert m.get().name == "custom" and m.get("demo").base.path == (tmp_path / "demo/base.safetensors").resolve()
    c = m.get("custom")
    assert c.arch == TINY and c.prompt_geometry == "box_crop" and c.crop_margin == 0.2 and c.base is None
    assert m.get("lo").lora.alpha == 8.0 and m.get("lo").lora.targets == ("encoder_qv", "decoder_qv")
    assert m.get("demo").pixel_std == (255.0, 255.0, 255.0) and m.get("demo").box_mask_logit == 4.0
    # propagation's IoU limit is the ensemble's own measured one; none recorded: the check is off
    assert m.get("demo").propagation_min_iou_pred == float("-inf")
    assert load_manifest(_write_manifest(tmp_path, [_entry(training={"propagation_min_iou_pred": 0.6})])).get(
        "demo").propagation_min_iou_pred == 0.6
    with pytest.raises(WeightsError, match="no ensemble 'zzz'"):
        m.get("zzz")
    # write back and read again: same entries
    p2 = tmp_path / "again" / "manifest.json"
    save_manifest(p2, [m.get("demo"), c])
    m2 = load_manifest(p2)
    assert m2.get("custom").arch == TINY and m2.get("demo").members[0].file == "demo/m0.safetensors"


def test_the_shipped_default_records_its_measured_propagation_iou_limit():
    from MuscleSAMLib.engine.propagation import DEFAULT_MIN_IOU_PRED
    from MuscleSAMLib.models.loading import read_manifest

    spec = read_manifest().get()  # the default entry; parsing needs no weights loaded
    assert spec.propagation_min_iou_pred == DEFAULT_MIN_IOU_PRED == spec.training["propagation_min_iou_pred"]


@pytest.mark.parametrize("entries, pattern", [
    ([_entry(colour="red")], r"ensemble 'demo': unknown keys \['colour'\]"),
    ([{k: v for k, v in _entry().items() if k != "licence"}], r"ensemble 'demo': missing \['licence'\]"),
    ([_entry(kind="mixture")], r"kind 'mixture' is not one of"),
    ([_entry(), _entry()], r"ensemble 'demo': duplicate name"),
    ([_entry(box_mask_prompt="false")], r"box_mask_prompt must be true or false"),
    ([_entry(arch="vit_q")], r"unknown architecture 'vit_q'"),
    ([_entry(input_size=512)], r"input_size 512 differs"),
    ([_entry(base=None)], r"kind decoder needs a base file"),
    ([_entry(kind="lora")], r"kind lora needs a lora object"),
    ([_entry(lora={"rank": 4, "alpha": 4})], r"only allowed with kind lora"),
    ([_entry(members=[{"file": "x", "sha256": "xyz"}])], r"sha256 must be 64 hexadecimal"),
    ([_entry(prompt_geometry="box_crop")], r"needs crop_margin"),
    ([_entry(default=True), _entry(name="b", default=True)], r"more than one default"),
    ([_entry(arch={"like": "demo_xs", "depth": 3})], r"unknown keys \['depth'\]"),
    ([_entry(training={"propagation_min_iou_pred": 1.5})], r"training.propagation_min_iou_pred"),
    ([_entry(mirror_view="yes")], r"mirror_view must be true or false"),
    ([_entry(training={"propagation_min_iou_pred": "0.75"})], r"training.propagation_min_iou_pred"),
])
def test_manifest_errors_name_file_and_entry(tmp_path, entries, pattern):
    p = _write_manifest(tmp_path, entries)
    with pytest.raises(WeightsError, match=pattern) as exc:
        load_manifest(p)
    assert str(p.resolve()) in str(exc.value) and "\n" not in str(exc.value)


def test_manifest_top_level_errors(tmp_path):
    p = tmp_path / "manifest.json"
    p.write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_manifest(p)
    with pytest.raises(WeightsError, match="format_version 2"):
        load_manifest(_write_manifest(tmp_path, [_entry()], format_version=2))
    p.write_text(json.dumps({"format_version": 1, "ensembles": [], "extra": 1}))
    with pytest.raises(WeightsError, match="unknown keys"):
        load_manifest(p)
    with pytest.raises(WeightsError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.json")


# ------------------------------------------------------------------ LoRA
def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, TINY.img_size, TINY.img_size, generator=g)


def test_lora_with_zero_b_equals_base():
    torch.manual_seed(0)
    sam = build_sam(TINY)
    x = _images()
    with torch.inference_mode():
        ref = sam.image_encoder(x)
    wrapped = apply_lora(sam, rank=4, members=3, seed=0)
    assert any("image_encoder.blocks.0.attn.qkv" == w for w in wrapped)
    assert any(w.endswith("cross_attn_token_to_image.q_proj") for w in wrapped)
    assert not any(w.endswith("k_proj") for w in wrapped)
    with torch.inference_mode():
        out = sam.image_encoder(x.repeat(3, 1, 1, 1))
    for m in range(3):
        torch.testing.assert_close(out[m * 2:(m + 1) * 2], ref, atol=1e-6, rtol=0)
    # base checkpoint keys are unchanged by wrapping
    assert "image_encoder.blocks.0.attn.qkv.weight" in sam.state_dict()
    assert all(not p.requires_grad for n, p in sam.named_parameters() if "lora_" not in n)


def _lora_sam(members: int = 3) -> torch.nn.Module:
    torch.manual_seed(1)
    sam = build_sam(TINY)
    apply_lora(sam, rank=2, members=members, alpha=4.0, seed=1)
    with torch.no_grad():
        for n, p in sam.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.2)
    return sam.eval()


def test_lora_batched_members_equal_members_alone():
    sam = _lora_sam()
    x = _images()
    with torch.inference_mode():
        batched = sam.image_encoder(x.repeat(3, 1, 1, 1)).view(3, 2, *sam.image_encoder.neck[-1].weight.shape[:1], 8, 8)
        for m in range(3):
            with lora_member(sam, m):
                alone = sam.image_encoder(x)
            torch.testing.assert_close(batched[m], alone, atol=1e-5, rtol=0)
            merged = merge_lora(sam.image_encoder, m)
            assert not any(isinstance(mod, MemberLoRALinear) for mod in merged.modules())
            torch.testing.assert_close(merged(x), alone, atol=1e-5, rtol=0)
        assert (batched[0] - batched[1]).abs().max() > 1e-3


def test_lora_only_touches_q_and_v_of_fused_qkv():
    lin = torch.nn.Linear(8, 24)
    layer = MemberLoRALinear(lin, members=2, rank=2, out_slices=[(0, 8), (16, 24)])
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 5, 8)
    with torch.inference_mode():
        diff = layer(x) - lin(x)
    assert diff[..., 8:16].abs().max() == 0 and diff[..., :8].abs().max() > 0 and diff[..., 16:].abs().max() > 0
    assert layer.lora_A.shape == (2, 4, 8) and layer.lora_B.shape == (2, 16, 2)
    with pytest.raises(ValueError, match="members-major"):
        layer(torch.randn(3, 8))


def test_lora_state_dict_round_trip_and_mismatch():
    sam = _lora_sam()
    one = lora_state_dict(sam, member=2)
    assert all(v.shape == sam.get_parameter(k).shape[1:] for k, v in one.items())
    fresh = build_sam(TINY)
    apply_lora(fresh, rank=2, members=1, alpha=4.0)
    load_lora_state_dict(fresh, one, member=0, what="m2.safetensors")
    for k, v in lora_state_dict(fresh, member=0).items():
        assert torch.equal(v, one[k])
    broken = dict(one)
    broken.pop(next(iter(broken)))
    broken["image_encoder.nowhere.lora_A"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="missing 1.*unexpected 1"):
        load_lora_state_dict(fresh, broken, member=0, what="m2.safetensors")


# ------------------------------------------------------------------ ensemble runtime
@pytest.fixture(scope="module", params=["decoder", "lora", "full"])
def ens(request) -> Ensemble:
    return Ensemble.random(TINY, request.param, members=3, seed=0)


def test_decode_shapes_and_ranges(ens):
    img, geo = ens.preprocess(_slice())
    emb = ens.encode(img)
    if ens.kind == "decoder":
        assert emb.shape == (1, 32, 8, 8)
    else:
        assert emb.shape == (3, 1, 32, 8, 8)
    r = ens.decode(emb, geo, BOXES)
    assert r.probs.shape == (3, 3, 50, 70) and r.probs.dtype == np.float32
    assert r.logits_lowres.shape == (3, 3, 32, 32) and r.iou_pred.shape == (3, 3)
    assert 0.0 <= r.probs.min() and r.probs.max() <= 1.0 and r.mean.shape == (3, 50, 70)
    assert np.abs(r.probs[0] - r.probs[1]).max() > 1e-4  # members differ


def test_batched_members_equal_member_by_member(ens):
    img, geo = ens.preprocess(_slice(seed=3))
    emb = ens.encode(img)
    heads = ens._heads.modules
    results = {}
    for mode in ("vmap", "loop"):
        ens.batch_mode = mode
        results[mode] = ens.decode(emb, geo, BOXES)
    ens.batch_mode = "auto"
    bm = torch.as_tensor(geo.box_to_model(BOXES), dtype=torch.float32)
    with torch.inference_mode():
        for m, head in enumerate(heads):
            e = emb if ens.kind == "decoder" else emb[m]
            for i in range(len(BOXES)):  # one member, one box at a time (SamPredictor's way)
                low, iou = head(e, bm[i:i + 1])
                p = torch.sigmoid(model_to_slice(low[0, 0], geo)).numpy()
                for r in results.values():
                    np.testing.assert_allclose(r.probs[m, i], p, atol=1e-5)
                    np.testing.assert_allclose(r.iou_pred[m, i], iou[0, 0].item(), atol=1e-5)


def test_probs_follow_sam_postprocessing(ens):
    """Slice-grid probabilities = sigmoid of SAM's own postprocess_masks of the low-res logits."""
    s = _slice(37, 90, seed=5)
    img, geo = ens.preprocess(s)
    r = ens.decode(ens.encode(img), geo, np.array([[10.0, 5.0, 60.0, 30.0]]))
    sam = build_sam(TINY)
    ref = sam.postprocess_masks(torch.from_numpy(r.logits_lowres[:, 0:1]), geo.resized_shape, (37, 90))
    np.testing.assert_allclose(r.probs[:, 0], torch.sigmoid(ref[:, 0]).numpy(), atol=1e-5)


def test_preprocess_matches_sam_normalise_then_pad():
    e = Ensemble.random(TINY, "decoder", members=1, seed=0)
    s = _slice(30, 64)
    x, geo = e.preprocess(s)
    assert x.shape == (1, 3, 64, 64) and geo.resized_shape == (30, 64)
    sam = build_sam(TINY)
    ref = sam.preprocess(torch.from_numpy(s)[None].expand(3, -1, -1))
    torch.testing.assert_close(x[0], ref, atol=1e-5, rtol=0)
    assert torch.all(x[0, :, 30:] == 0)


def test_lora_kind_encodes_members_in_one_pass_like_alone():
    e = Ensemble.random(TINY, "lora", members=3, seed=2)
    img = _images(2, seed=4)
    batched = e.encode(img)
    assert batched.shape == (3, 2, 32, 8, 8)
    with torch.inference_mode():
        for m in range(3):
            with lora_member(e._encoder, m):
                torch.testing.assert_close(batched[m], e._encoder(img), atol=1e-5, rtol=0)


def test_box_mask_prompt_grid():
    mp = box_mask_prompt(torch.tensor([[16.0, 8.0, 48.0, 24.0], [30.0, 30.0, 30.5, 30.5]]), 64, 32, 4.0)
    assert mp.shape == (2, 1, 32, 32)
    inside = mp[0, 0] > 0
    assert inside.sum() == 16 * 8 and inside[4:12, 8:24].all()
    assert set(mp.unique().tolist()) == {-4.0, 4.0}
    assert mp[1, 0].gt(0).sum() == 1  # a box smaller than a cell still shows


def test_box_mask_prompt_changes_the_prediction():
    plain = Ensemble.random(TINY, "decoder", members=2, seed=0)
    boxed = Ensemble.random(TINY, "decoder", members=2, seed=0, box_mask_prompt=True)
    assert plain.group_key == boxed.group_key  # same encoder weights -> same embedding cache group
    img, geo = plain.preprocess(_slice())
    emb = plain.encode(img)
    a, b = plain.decode(emb, geo, BOXES[:1]), boxed.decode(emb, geo, BOXES[:1])
    assert np.abs(a.probs - b.probs).max() > 1e-4
    lowres = np.zeros((1, 32, 32), dtype=np.float32)  # explicit mask prompts override the box prompt
    c = boxed.decode(emb, geo, BOXES[:1], mask_prompts=lowres)
    assert np.abs(c.probs - b.probs).max() > 1e-6
    with pytest.raises(InputError, match="mask_prompts"):
        boxed.decode(emb, geo, BOXES[:1], mask_prompts=np.zeros((1, 8, 8)))


def test_box_crop_geometry_pastes_into_windows():
    e = Ensemble.random(TINY, "decoder", members=2, seed=0, prompt_geometry="box_crop", crop_margin=0.25)
    r = e.predict(_slice(80, 100), np.array([[20.0, 30.0, 40.0, 50.0], [60.0, 5.0, 95.0, 25.0]]))
    assert r.windows is not None and r.probs.shape == (2, 2, 80, 100)
    x0, y0, x1, y1 = r.windows[0]
    assert x0 <= 20 and y0 <= 30 and x1 >= 40 and y1 >= 50
    outside = np.ones((80, 100), bool)
    outside[y0:y1, x0:x1] = False
    assert np.all(r.probs[:, 0][:, outside] == 0) and r.probs[:, 0, y0:y1, x0:x1].min() > 0


def test_bad_boxes_and_inputs():
    e = Ensemble.random(TINY, "decoder", members=1, seed=0)
    img, geo = e.preprocess(_slice())
    emb = e.encode(img)
    with pytest.raises(GeometryError, match="no area"):
        e.decode(emb, geo, np.array([[10, 10, 10, 20]]))
    with pytest.raises(GeometryError, match="outside"):
        e.decode(emb, geo, np.array([[100, 10, 120, 20]]))
    with pytest.raises(InputError, match=r"\(N, 4\)"):
        e.decode(emb, geo, np.zeros((0, 4)))
    with pytest.raises(InputError, match="2D slice"):
        e.preprocess(np.zeros((2, 3, 4)))


def _save_ensemble(tmp_path: Path, kind: str) -> tuple[Path, list]:
    """Write a random ensemble as files + manifest the way training does (via the public helpers)."""
    torch.manual_seed(7)
    sams = [build_sam(TINY) for _ in range(2)]
    entry = _entry(name=f"t_{kind}", kind=kind, arch=TINY.to_dict(), input_size=64, box_mask_prompt=False,
                   normalisation={"pixel_mean": list(TINY.pixel_mean), "pixel_std": list(TINY.pixel_std)})
    if kind == "decoder":
        base = {k: v for k, v in sams[0].state_dict().items() if k.startswith("image_encoder.")}
        members = [{k: v for k, v in s.state_dict().items() if not k.startswith("image_encoder.")} for s in sams]
    else:  # lora: a frozen base + per-member adapter files
        entry["lora"] = {"rank": 2, "alpha": 4.0}
        apply_lora(sams[0], rank=2, members=2, alpha=4.0, seed=3)
        with torch.no_grad():
            for n, p in sams[0].named_parameters():
                if n.endswith("lora_B"):
                    p.normal_(0, 0.2)
        base = {k: v for k, v in sams[0].state_dict().items() if ".lora_" not in k}
        members = [lora_state_dict(sams[0], member=m) for m in range(2)]
    entry["base"] = {"file": "base.safetensors", "sha256": save_safetensors_atomic(base, tmp_path / "base.safetensors")}
    entry["members"] = [{"file": f"m{m}.safetensors", "sha256": save_safetensors_atomic(st, tmp_path / f"m{m}.safetensors")}
                        for m, st in enumerate(members)]
    return _write_manifest(tmp_path, [entry]), sams


@pytest.mark.parametrize("kind", ["decoder", "lora"])
def test_from_spec_loads_verified_files(tmp_path, kind):
    p, sams = _save_ensemble(tmp_path, kind)
    spec = load_manifest(p).get()
    e = Ensemble.from_spec(spec)
    assert e.members == 2 and e.kind == kind and re.fullmatch(r"[0-9a-f]{24}", e.group_key)
    img, geo = e.preprocess(_slice())
    r = e.decode(e.encode(img), geo, BOXES[:2])
    # reference: member 1 run directly from its source model (merged adapters for lora)
    ref_model = sams[1] if kind == "decoder" else merge_lora(sams[0], 1)
    if kind == "decoder":
        ref_model.image_encoder = sams[0].image_encoder
    with torch.inference_mode():
        emb = ref_model.image_encoder(img)
        low, _ = PromptHead(ref_model.prompt_encoder, ref_model.mask_decoder)(emb, torch.as_tensor(
            geo.box_to_model(BOXES[:2]), dtype=torch.float32))
    np.testing.assert_allclose(r.logits_lowres[1], low[:, 0].numpy(), atol=1e-4)
    # tampering with a member is caught before it is read
    (tmp_path / "m1.safetensors").write_bytes((tmp_path / "m1.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsError, match="m1.safetensors has sha256"):
        Ensemble.from_spec(spec)


def test_decoder_member_may_not_override_encoder(tmp_path):
    torch.manual_seed(0)
    st = build_sam(TINY).state_dict()
    e = Ensemble.random(TINY, "decoder", members=1)
    with pytest.raises(WeightsError, match="overrides image-encoder weights"):
        Ensemble.from_states(e.spec, {k: v for k, v in st.items() if k.startswith("image_encoder.")}, [st])


def test_probs_window_equals_full_slice_probs(ens):
    img, geo = ens.preprocess(_slice(45, 77, seed=9))
    r = ens.decode(ens.encode(img), geo, BOXES[:2])
    win = r.probs_window(1, 3, 40, 20, 77)  # before the full slice is computed: separable matrices
    assert win.shape == (3, 37, 57)
    np.testing.assert_allclose(win, r.probs[:, 1, 3:40, 20:77], atol=1e-5)
    np.testing.assert_allclose(r.probs_window(0, 0, 45, 0, 77), r.probs[:, 0], atol=1e-6)


def test_from_models_and_vmapped_full_encoders():
    torch.manual_seed(3)
    sams = [build_sam(TINY) for _ in range(2)]
    img = _images(1, seed=2)
    dec = Ensemble.from_models("decoder", sams, arch=TINY)
    full_loop = Ensemble.from_models("full", sams, arch=TINY)
    full_vmap = Ensemble.from_models("full", sams, arch=TINY, batch_mode="vmap")
    e_dec, e_loop, e_vmap = dec.encode(img), full_loop.encode(img), full_vmap.encode(img)
    torch.testing.assert_close(e_loop, e_vmap, atol=1e-5, rtol=0)
    torch.testing.assert_close(e_dec, e_loop[0], atol=1e-6, rtol=0)  # decoder kind shares member 0's encoder
    assert dec.group_key != full_loop.group_key
    for s in sams:
        apply_lora(s, rank=2, members=1, alpha=2.0, seed=0)
    sams[1].image_encoder.load_state_dict(sams[0].image_encoder.state_dict())
    lo = Ensemble.from_models("lora", sams, arch=TINY, lora=LoRASpec(2, 2.0))
    assert lo.encode(img).shape == (2, 1, 32, 8, 8)


def test_device_policy_auto_picks_cpu_without_cuda_and_refuses_an_absent_gpu(monkeypatch):
    """One device policy (models/device.py): auto = CUDA when present; an explicit GPU that is absent is refused."""
    from MuscleSAMLib.errors import InputError
    from MuscleSAMLib.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu" and resolve_device(None).type == "cpu"
    assert resolve_device("cpu").type == "cpu" and resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(InputError, match="no CUDA GPU is available here; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="not a device"):
        resolve_device("gpu please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto").type == "cuda" and resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(InputError, match="has 1 CUDA GPU"):
        resolve_device("cuda:3")


def test_loading_an_ensemble_goes_through_the_one_device_policy(monkeypatch, tmp_path):
    """The loader front ends share refuses an absent GPU with the policy's message (not a warning and a CPU run)."""
    from musclesam_test_helpers import write_random_decoder_ensemble

    from MuscleSAMLib.errors import InputError
    from MuscleSAMLib.models.loading import load_ensemble

    manifest = write_random_decoder_ensemble(tmp_path / "w")  # any installed ensemble (the shipped one needs Python >= 3.10)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU is available here"):
        load_ensemble(None, manifest, device="cuda")
