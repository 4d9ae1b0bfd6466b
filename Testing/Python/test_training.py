"""Fast tests of the training pipeline (tiny model, synthetic phantoms; each well under 10 s on 2 cores)."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MuscleSAMLib.models.architectures import build_sam
from MuscleSAMLib.models.manifest import load_manifest
from MuscleSAMLib.models.safe_load import sha256_file
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.training import losses
from MuscleSAMLib.training.config import ConfigError, load_config, parse_config
from MuscleSAMLib.training.data import kfold, load_case, make_samples, render_batch
from MuscleSAMLib.training.model_io import forward, prompt_and_decode
from MuscleSAMLib.training.schedule import lr_factor
from MuscleSAMLib.training.sharpness_aware import SAMOptimizer

torch.set_num_threads(2)

TINY = {"like": "demo_xs", "name": "tiny", "encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [0], "img_size": 64, "patch_size": 8, "window_size": 0,
        "prompt_embed_dim": 32, "decoder_depth": 1, "decoder_mlp_dim": 64, "decoder_num_heads": 2,
        "iou_head_hidden_dim": 32, "mask_in_chans": 8}


def _write(arr: np.ndarray, path: Path) -> str:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.5, 1.5, 6.0))
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ph")
    out = []
    for seed in (0, 1):
        ph = make_thigh_phantom(seed=seed, shape=(2, 64, 96), muscles=(1, 2, 3))
        out.append({"image": _write(ph.water.astype(np.float32), d / f"p{seed}_water.nii.gz"),
                    "labels": _write(ph.labels, d / f"p{seed}_labels.nii.gz"), "name": f"P{seed}"})
    return out


def _cfg(phantom_files, **kw):
    base = {"data": {"train": [phantom_files[0]], "val": [phantom_files[1]]}, "arch": TINY, "steps": 6,
            "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "val_every": 3, "checkpoint_every": 3,
            "members": 2, "member_steps": 2, "member_variants": 1, "threads": 2}
    base.update(kw)
    return parse_config(base)


# ---------------------------------------------------------------- losses
def test_dice_bce_by_hand():
    logits = torch.tensor([[[0.0, 2.0], [-2.0, 0.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    assert torch.isclose(losses.dice_bce(logits, target), dice + bce, atol=1e-6)


def test_iou_head_loss_and_mask_iou():
    logits = torch.tensor([[[5.0, 5.0], [-5.0, -5.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert torch.isclose(losses.mask_iou(logits, target), torch.tensor([0.5])).all()
    assert torch.isclose(losses.iou_head_loss(torch.tensor([0.7]), logits, target), torch.tensor(0.04), atol=1e-6)


def test_auto_weighted_loss_by_hand():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 8, 8), (torch.rand(2, 8, 8) > 0.5).float()
    crit = losses.AutoWeightedLoss()
    terms = crit.terms(logits, target)
    assert torch.isclose(crit(logits, target), terms.sum(), atol=1e-6)  # s_k = 0: plain sum
    with torch.no_grad():
        crit.log_vars.fill_(1.0)
    assert torch.isclose(crit(logits, target), (math.exp(-1) * terms + 1).sum(), atol=1e-5)
    sdf = losses.signed_distance(np.pad(np.ones((1, 4, 4)), ((0, 0), (2, 2), (2, 2))))
    assert sdf[0, 4, 4] < 0 < sdf[0, 0, 0] and np.abs(sdf).max() <= 1
    opt = torch.optim.AdamW([crit.param_group(base_lr=1e-3)], lr=1e-3, weight_decay=0.5)
    crit.log_vars.grad = torch.zeros(4)
    opt.step()  # no gradient: only decay could move them, and the learned term weights are never decayed
    assert torch.equal(crit.log_vars.detach(), torch.ones(4))


def test_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10) < 0.1


# ---------------------------------------------------------------- SAM optimiser
def test_sam_step_differs_and_restores():
    torch.manual_seed(0)
    w0 = torch.randn(5)
    x = torch.randn(20, 5)

    def loss_fn(w):
        return ((x @ w) ** 4).mean()

    a = torch.nn.Parameter(w0.clone())
    plain = torch.optim.SGD([a], lr=0.1)  # (Adam's first step is sign(g)-sized: SGD shows the difference)
    loss_fn(a).backward()
    plain.step()
    b = torch.nn.Parameter(w0.clone())
    opt = SAMOptimizer([b], torch.optim.AdamW, rho=0.5, lr=0.1)
    loss_fn(b).backward()
    g = b.grad.clone()
    opt.first_step()
    assert torch.allclose(b.detach(), w0 + 0.5 * g / g.norm(), atol=1e-6)  # perturbed to w + e
    loss_fn(b).backward()
    for group in opt.param_groups:
        group["lr"] = 0.0
    opt.second_step()
    assert torch.allclose(b.detach(), w0, atol=1e-6)  # restored (lr 0: no move)
    c = torch.nn.Parameter(w0.clone())
    opt2 = SAMOptimizer([c], torch.optim.SGD, rho=0.5, lr=0.1)
    opt2.step(lambda: (loss_fn(c).backward(), loss_fn(c))[1])
    assert not torch.allclose(c.detach(), a.detach())


def test_the_perturbed_pass_leaves_batch_norm_statistics_alone():
    """SAM's second forward pass runs at perturbed weights: batch norms in training mode still normalise by
    the batch, but their running statistics (what inference uses) count only the real step."""
    from MuscleSAMLib.training.sharpness_aware import frozen_batch_norm_statistics

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3)).train()
    x = torch.randn(4, 2, 5, 5) + 3.0
    before = net[1].running_mean.clone()
    with frozen_batch_norm_statistics(net):
        out = net(x)
    assert torch.equal(net[1].running_mean, before) and net[1].momentum == 0.1  # restored after the block
    assert abs(float(out.mean())) < 1e-5  # still normalised by the batch
    net(x)
    assert not torch.equal(net[1].running_mean, before)


# ---------------------------------------------------------------- config
def test_config_errors(phantom_files, tmp_path):
    good = {"data": {"train": [phantom_files[0]]}}
    parse_config(good)
    bad = [({**good, "stepz": 3}, "unknown keys ['stepz']"),
           ({**good, "box_mask_prompt": "false"}, "true or false"),
           ({**good, "mode": "ED"}, "mode 'ED' is not one of"),
           ({**good, "lr": -1}, "lr must be in"),
           ({**good, "batch_size": 0}, "batch_size must be >= 1"),
           ({**good, "arch": "vit_q"}, "arch 'vit_q' unknown"),
           ({"data": {"train": [{"image": "nope.nii.gz", "labels": "x"}]}}, "not found"),
           ({**good, "init": str(tmp_path / "missing.pth")}, "not found"),
           ({**good, "mode": "D"}, "needs init")]
    for cfg, msg in bad:
        with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
            parse_config(cfg)
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(p)


def test_bad_inputs_fail_before_training(phantom_files, tmp_path):
    from MuscleSAMLib.errors import GeometryError, InputError, WeightsError
    from MuscleSAMLib.training.ensemble import train_ensemble

    other = make_thigh_phantom(seed=3, shape=(2, 64, 100), muscles=(1,))
    lab = _write(other.labels, tmp_path / "small_labels.nii.gz")
    with pytest.raises(GeometryError):
        load_case(parse_config({"data": {"train": [{"image": phantom_files[0]["image"], "labels": lab}]}}).train[0])
    empty = _write(np.zeros((2, 64, 96), np.uint8), tmp_path / "empty_labels.nii.gz")
    with pytest.raises(InputError, match="no muscle labels"):
        load_case(parse_config({"data": {"train": [{"image": phantom_files[0]["image"], "labels": empty}]}}).train[0])
    ck = tmp_path / "wrong.pth"
    torch.save({"image_encoder.foo": torch.zeros(3)}, ck)
    with pytest.raises(WeightsError, match="does not match"):
        train_ensemble(_cfg(phantom_files, init=str(ck)), tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_kfold_is_by_patient():
    names = ["a", "b", "c", "d", "e"]
    vals = []
    for f in range(2):
        tr, va = kfold(names, 2, f)
        assert not set(tr) & set(va) and set(tr) | set(va) == set(range(5))
        vals += va
    assert sorted(vals) == list(range(5))


# ---------------------------------------------------------------- model io
def test_batched_decoder_matches_segment_anything():
    torch.manual_seed(0)
    sam = build_sam(_arch()).eval()
    emb = torch.randn(1, 32, 8, 8)
    box = torch.tensor([[10.0, 12.0, 40.0, 50.0]])
    from MuscleSAMLib.models.ensemble import box_mask_prompt
    mp = box_mask_prompt(box, 64, 32, 4.0)
    with torch.no_grad():
        ours, iou = prompt_and_decode(sam, emb, box, mp)
        sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=mp)
        ref, ref_iou = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=False)
    assert torch.allclose(ours, ref[:, 0], atol=1e-5) and torch.allclose(iou, ref_iou[:, 0], atol=1e-5)


def _arch():
    from MuscleSAMLib.models.architectures import ArchSpec
    return ArchSpec.from_dict(TINY)


# ---------------------------------------------------------------- training
def test_training_reduces_loss(phantom_files, tmp_path):
    from MuscleSAMLib.training.data import load_case
    from MuscleSAMLib.training.trainer import build_model, train_one
    from MuscleSAMLib.models.safe_load import load_into, load_state_dict

    cfg = _cfg(phantom_files, steps=30, val_every=30, lr=2e-3, box_mask_prompt=False, aug_intensity=False)
    case = load_case(cfg.train[0])
    samples = make_samples([case])
    sam = build_model(cfg)
    x, b, t = render_batch([case], samples, list(range(len(samples))), cfg, 64, 32, sam.pixel_mean.flatten(),
                           sam.pixel_std.flatten(), None)

    def loss_now(m):
        with torch.no_grad():
            return float(losses.dice_bce(forward(m, x, b, False, 4.0)[0], t))

    torch.manual_seed(0)
    before = loss_now(build_model(cfg))
    torch.manual_seed(0)
    r = train_one(cfg, [case], [], tmp_path / "r", mode="E+D", seed=0, steps=30, lr=2e-3, progress=False)
    trained = build_model(cfg)
    load_into(trained, load_state_dict(r.best_path))
    assert r.steps_done == 30
    assert loss_now(trained) < 0.8 * before


def test_resume_continues_from_saved_step(phantom_files, tmp_path, monkeypatch):
    from MuscleSAMLib.training import trainer

    cfg = _cfg(phantom_files, steps=6, checkpoint_every=3, val_every=3)
    case = trainer.load_case(cfg.train[0]) if hasattr(trainer, "load_case") else load_case(cfg.train[0])
    val = load_case(cfg.val[0])
    r1 = trainer.train_one(cfg, [case], [val], tmp_path / "r", mode="E+D", seed=0, steps=3, lr=1e-3, progress=False)
    assert r1.steps_done == 3
    calls = []
    real = trainer.render_batch
    monkeypatch.setattr(trainer, "render_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    r2 = trainer.train_one(cfg, [case], [val], tmp_path / "r", mode="E+D", seed=0, steps=6, lr=1e-3, resume=True,
                           progress=False)
    assert r2.steps_done == 6 and len(calls) == 3  # only steps 4..6 ran
    assert [h["step"] for h in r2.history] == [3, 6]


def test_ensemble_manifest_entry_and_runtime_load(phantom_files, tmp_path):
    from MuscleSAMLib.models.ensemble import Ensemble
    from MuscleSAMLib.training.ensemble import train_ensemble

    cfg = _cfg(phantom_files, steps=3, val_every=3, name="tiny_demo")
    rec = train_ensemble(cfg, tmp_path / "out", manifest=tmp_path / "w" / "manifest.json", progress=False)
    assert rec["validation"]["dsc"] >= 0 and "ece_box_15" in rec["validation"]
    man = load_manifest(tmp_path / "w" / "manifest.json")
    spec = man.get("tiny_demo")
    assert spec.kind == "decoder" and len(spec.members) == 2 and spec.box_mask_prompt
    for f in spec.files:
        assert sha256_file(f.path) == f.sha256
    ens = Ensemble.from_spec(spec)
    assert ens is not None
    # a second run with the same name replaces the entry, other entries survive
    train_ensemble(_cfg(phantom_files, steps=3, val_every=3, name="other", members=1, ensemble_kind="full"),
                   tmp_path / "out2", manifest=tmp_path / "w" / "manifest.json", progress=False)
    assert load_manifest(tmp_path / "w" / "manifest.json").names == ["tiny_demo", "other"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_json: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    from MuscleSAMLib.training.config import parse_config
    from MuscleSAMLib.training.ensemble import train_ensemble
    import torch.distributed as dist

    train_ensemble(parse_config(json.loads(cfg_json)), out, progress=False)
    dist.destroy_process_group()


def test_two_process_gloo(phantom_files, tmp_path):
    import torch.multiprocessing as mp

    cfg = {"data": {"train": [phantom_files[0]], "val": [phantom_files[1]]}, "arch": TINY, "steps": 2,
           "batch_size": 2, "warmup_steps": 0, "val_every": 2, "members": 2, "member_steps": 2,
           "member_variants": 1, "name": "ddp"}
    mp.spawn(_ddp_worker, args=(2, _free_port(), json.dumps(cfg), str(tmp_path / "ddp")), nprocs=2, join=True)
    spec = load_manifest(tmp_path / "ddp" / "manifest.json").get("ddp")
    assert len(spec.members) == 2
    assert (tmp_path / "ddp" / "member_1" / "best.safetensors").is_file()  # trained by rank 1


def test_cli_unknown_key_exit_2(phantom_files, tmp_path, capsys):
    from MuscleSAMLib.cli.main import main

    p = tmp_path / "c.json"
    p.write_text(json.dumps({"data": {"train": [phantom_files[0]]}, "epochs": 3}))
    assert main(["train", "--config", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "unknown keys ['epochs']" in capsys.readouterr().err


def test_baked_temperature_divides_logits():
    from MuscleSAMLib.training.validate import bake_temperature

    torch.manual_seed(0)
    sam = build_sam(_arch()).eval()
    hot = build_sam(_arch()).eval()
    hot.load_state_dict(bake_temperature(sam.state_dict(), 2.5))
    x, box = torch.randn(2, 3, 64, 64), torch.tensor([[8.0, 8.0, 40.0, 50.0]] * 2)
    with torch.no_grad():
        a = forward(sam, x, box, True, 4.0)[0]
        b = forward(hot, x, box, True, 4.0)[0]
    assert torch.allclose(b, a / 2.5, atol=1e-5)


def test_temperature_fit_needs_validation(phantom_files):
    with pytest.raises(ConfigError, match="temperature 0"):
        parse_config({"data": {"train": [phantom_files[0]]}, "temperature": 0})
    assert parse_config({"data": {"train": [phantom_files[0]], "val": [phantom_files[1]]}, "temperature": 0})
