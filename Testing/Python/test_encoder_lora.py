"""LoRA in LiteMedSAM's TinyViT stages (recipe options ``encoder_lora_stages`` / ``encoder_lora_rank``): the adapters
change only the query and value projections, start from the base, and fold into the weights inference runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from MuscleSAMLib.errors import InputError
from MuscleSAMLib.models.architectures import build_sam
from MuscleSAMLib.models.litemedsam import CHECKPOINT_SHA256, checkpoint_path
from MuscleSAMLib.models.safe_load import load_state_dict
from MuscleSAMLib.training.encoder_lora import EncoderLoRA, qv_rows
from MuscleSAMLib.training.encoder_tail import head_features, run_tail
from MuscleSAMLib.training.litemedsam_recipe import run_recipe

from musclesam_test_helpers import two_recipe_subjects


def test_adapters_start_at_the_base_touch_only_q_and_v_and_merge_into_the_same_function():
    torch.manual_seed(0)
    sam = build_sam("litemedsam").eval()
    enc = sam.image_encoder
    feats = head_features(enc, torch.randn(1, 3, 256, 256), 2).clone()
    before = run_tail(enc, feats, 2)
    lora = EncoderLoRA(enc, [2], rank=4, seed=1)
    assert lora.paths == ["image_encoder.layers.2.blocks.%d.attn.qkv.weight" % i for i in range(len(lora.paths))]
    assert torch.equal(run_tail(enc, feats, 2), before)  # B = 0: training starts from the base
    with torch.no_grad():
        for b in lora.B:
            b.normal_(0.0, 0.05)
    adapted = run_tail(enc, feats, 2)
    assert (adapted - before).abs().max() > 1e-2
    attn = enc.layers[2].blocks[0].attn
    rows = qv_rows(attn)
    kd, d = attn.key_dim, attn.d
    assert len(rows) == attn.num_heads * (kd + d)
    k_rows = torch.tensor([h * (2 * kd + d) + kd + i for h in range(attn.num_heads) for i in range(kd)])
    assert not set(k_rows.tolist()) & set(rows.tolist())  # keys are never adapted
    delta = lora.delta(0)
    assert delta[k_rows].abs().max() == 0 and delta[rows].abs().max() > 0
    merged = lora.merged(sam.state_dict())
    lora.remove()
    plain = build_sam("litemedsam").eval()
    plain.load_state_dict(merged)
    torch.testing.assert_close(run_tail(plain.image_encoder, feats, 2), adapted, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no attention to adapt"):
        EncoderLoRA(enc, [0])


def test_a_lora_recipe_trains_the_adapters_and_the_full_stages_and_refuses_impossible_options(tmp_path: Path):
    """encoder_stages 2 with encoder_lora_stages 1: stage 2 changes only in its q/v rows (adapters folded in),
    stage 3 trains in full; options that cannot be honoured are refused while reading the config."""
    subjects = two_recipe_subjects(tmp_path, "A", seed=80)
    recipe = {"variants": ["water"], "steps": 2, "val_every": 2, "boxes_per_step": 2, "members": 1, "member_steps": 1,
              "save_every": 1, "warmup_steps": 0, "encoder_stages": 2, "encoder_lora_stages": 1, "encoder_lora_rank": 4}
    cfg = tmp_path / "lora.json"
    cfg.write_text(json.dumps({"name": "lora", "subjects": subjects, "threads": 1, "recipe": recipe}))
    record = run_recipe(cfg, tmp_path / "run", progress=lambda m: None, only="fold_A0_to_A1")
    assert record["recipe"]["encoder_lora_stages"] == 1
    best = load_state_dict(tmp_path / "run" / "fold_A0_to_A1" / "decoder_best.safetensors")
    base = load_state_dict(checkpoint_path(), CHECKPOINT_SHA256)
    attn = build_sam("litemedsam").image_encoder.layers[2].blocks[0].attn
    rows = qv_rows(attn)
    others = torch.ones(attn.qkv.out_features, dtype=torch.bool)
    others[rows] = False
    stage2 = [k for k in best if k.startswith("image_encoder.layers.2.")]
    changed = [k for k in stage2 if not torch.equal(best[k], base[k])]
    assert changed and all(k.endswith("attn.qkv.weight") for k in changed)  # only the adapted weights moved
    for k in changed:
        assert torch.equal(best[k][others], base[k][others])  # ... and only in their q and v rows
    fold = tmp_path / "run" / "fold_A0_to_A1"
    seen_in_validation = sorted((fold / "val_embeddings").rglob("*.safetensors"))
    assert seen_in_validation
    for f in seen_in_validation:  # validation (adapters by hooks) saw what the merged weights give inference
        torch.testing.assert_close(load_state_dict(f)["embedding"].float(),
                                   load_state_dict(fold / "embeddings" / f.relative_to(fold / "val_embeddings"))["embedding"].float(),
                                   atol=2e-3, rtol=1e-2)
    stage3 = [k for k in best if k.startswith("image_encoder.layers.3.") and k.endswith("mlp.fc1.weight")]
    assert stage3 and any(not torch.equal(best[k], base[k]) for k in stage3)  # the last stage trains in full
    for change, message in [({"encoder_lora_stages": 3}, "encoder_lora_stages must be 1..encoder_stages"),
                            ({"encoder_lora_rank": 0}, "encoder_lora_rank must be >= 1"),
                            ({"encoder_stages": 4, "encoder_lora_stages": 1}, "stage 0, which has no attention"),
                            ({"encoder_stages": 5}, "1..4"),
                            ({"encoder_lora_rank": 4.0}, "encoder_lora_rank must be a whole number, got 4.0"),
                            ({"encoder_lora_lr": "5e-4"}, "encoder_lora_lr must be a number"),
                            ({"augment": "0.5"}, "augment must be a number")]:
        cfg.write_text(json.dumps({"name": "lora", "subjects": subjects, "recipe": {**recipe, **change}}))
        with pytest.raises(InputError, match=message) as err:
            run_recipe(cfg, tmp_path / "run2", progress=lambda m: None)
        assert str(cfg) in str(err.value)
    assert not (tmp_path / "run2").exists()  # refused before any work
