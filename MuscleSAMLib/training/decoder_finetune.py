"""Fine-tune a pretrained SAM-family mask decoder on stored embeddings, then grow an ensemble of output heads.

The recipe of the shipped LiteMedSAM ensemble (weights/MODEL_CARD.md), in two stages:

1. **Decoder** (METHODS.md "D" configuration): the image encoder is frozen, every training slice was
   encoded once (:mod:`.embedding_store`), and the whole mask decoder (two-way transformer, upscaling,
   output heads) is trained with Dice + BCE on the 256 x 256 logits plus the IoU-head MSE. One slice a
   step and up to ``boxes_per_step`` of its tight boxes, each grown outward by a random 0-``jitter`` of
   its side. AdamW, warm-up then cosine, gradient clip. Validation DSC on held-out subjects (scored
   through :class:`~MuscleSAMLib.models.ensemble.Ensemble`, the inference path) every ``val_every``
   steps; the best state is kept and training stops after ``patience`` checks without a gain.
2. **Heads**: M members share that decoder's trunk and each trains its own output heads (hypernetwork
   MLP of mask token 0 and the IoU head, :mod:`~MuscleSAMLib.models.shared_trunk`) from the stage-1
   heads, perturbed by its own seed, on its own bootstrap resample of the training slices, with its own
   jitter draws. Members cost almost nothing at inference and disagree where features are ambiguous.

Clicks (``max_clicks`` > 0, both stages): with probability ``click_prob`` a step also simulates an
interaction as SAM's training does: from the box-only answer, 1..``max_clicks`` corrective clicks
are drawn one after another (:func:`~MuscleSAMLib.engine.clicks.corrective_click`, randomised, on the
current answer's errors), each re-decode gets every click so far plus the previous logits as the
dense mask prompt; the last answer's loss is added to the box-only loss, plus ``click_focus`` x the
mean BCE over the pixels the previous answer got wrong (a click fixes a small region, which whole-mask
Dice + BCE barely weighs: without it a decoder learns to copy the previous answer). So the shipped
decoder uses points and a previous answer the way the engine feeds them
(:mod:`~MuscleSAMLib.models.point_prompt`).

Encoder stages (``encoder_stages`` = N > 0, stage 1 only): the last N stages of LiteMedSAM's TinyViT
and its neck train with the decoder at ``encoder_lr``, from stored features of the frozen stages before
them (:mod:`.encoder_tail`); validation, the heads and the temperature then use the embeddings through
the trained tail. With ``augment`` = a > 0, a share a of the steps instead runs the frozen stages on a
random intensity variant of the slice (:mod:`.augment`: bias field, gamma, inversion, noise, blur), so
the trained stages see contrasts the Dixon images do not have; the heads train on the plain images.

Loss and optimiser (METHODS.md steps 6-7, measured options): ``loss`` "umedsam" replaces Dice + BCE by
U-MedSAM's automatically weighted terms in both stages; ``sam_rho`` > 0 takes each stage-1 step's gradient
again at the sharpness-aware perturbed weights (twice the cost a step).

Both stages checkpoint to ``out`` every ``save_every`` steps and resume from there.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_json_atomic
from ..engine.boxes import boxes_from_labels
from ..engine.clicks import corrective_click
from ..models.architectures import build_sam, get_arch
from ..models.ensemble import Ensemble, synthetic_spec
from ..models.safe_load import load_state_dict, save_safetensors_atomic
from ..models.point_prompt import point_prompt
from ..models.shared_trunk import MEMBER_HEAD_PREFIXES
from ..slice_geometry import ResizePad, resize_pad
from .data import jitter_box
from .embedding_store import DixonCase, load_embedding
from .augment import augment_slice
from .config import LOSSES
from .encoder_lora import EncoderLoRA
from .encoder_tail import (TINYVIT_STAGES, first_tail_stage, head_features, load_features, run_tail, tail_parameters,
                           tail_prefixes, write_tail_embeddings)
from .losses import AutoWeightedLoss, dice_bce, iou_head_loss, signed_distance
from .schedule import lr_factor, set_lr
from .sharpness_aware import SAMOptimizer, frozen_batch_norm_statistics

DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")
#: Prompt-encoder parts a recipe may train with the decoder (``train_prompt``): the dense mask-prompt
#: path, and the positive/negative point embeddings (not the box-corner ones, 2 and 3).
PROMPT_PARTS = {"mask": ("prompt_encoder.mask_downscaling.",),
                "points": ("prompt_encoder.point_embeddings.0.", "prompt_encoder.point_embeddings.1.",
                           "prompt_encoder.not_a_point_embed.")}
ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class DecoderRecipe:
    """Settings of both stages (recorded in the model card and the manifest's training record)."""

    arch: str = "litemedsam"
    variants: tuple[str, ...] = ("water", "fat", "inphase", "outphase")
    steps: int = 400
    boxes_per_step: int = 4
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    iou_loss_weight: float = 1.0
    jitter: float = 0.1
    jitter_px: int = 2
    val_every: int = 50
    patience: int = 3
    save_every: int = 25
    seed: int = 0
    final_steps: int = 0  # > 0: the final model's decoder steps (else the mean of the folds' best steps)
    members: int = 5
    member_steps: int = 120
    member_lr: float = 2e-4
    member_perturb: float = 0.05
    bootstrap: bool = True
    click_prob: float = 0.0
    max_clicks: int = 3
    click_focus: float = 0.0  # > 0: extra BCE on the pixels the previous answer got wrong (the clicks' job)
    no_click_prob: float = 0.0  # click steps that also feed the answer back once with no new click (must keep it)
    train_prompt: tuple[str, ...] = ()  # prompt-encoder parts trained with the decoder: "mask", "points"
    val_clicks: int = 0  # > 0: validation scores the click curve (mean object DSC after 0..val_clicks clicks)
    encoder_stages: int = 0  # > 0: TinyViT's last N stages + neck train too (their input features cached)
    encoder_lr: float = 5e-5  # ... at this learning rate (same schedule)
    augment: float = 0.0  # with encoder_stages: share of steps on a random intensity variant (.augment)
    prompt_geometry: str = "slice"  # "legs": each leg's crop (MuscleSAMLib.leg_layout), as inference cuts it
    #: "dice_bce" (METHODS.md step 6), or "umedsam": U-MedSAM's automatically weighted pixel MSE + soft Dice +
    #: BCE + boundary terms (losses.AutoWeightedLoss, its weights learned with the model), in both stages;
    #: the IoU-head term is added to either
    loss: str = "dice_bce"
    sam_rho: float = 0.0  # > 0: stage 1 steps with Sharpness-Aware Minimisation around AdamW (twice the cost)
    encoder_lora_stages: int = 0  # K > 0: the tail's first K stages stay frozen with q/v LoRA (.encoder_lora)
    encoder_lora_rank: int = 4  # ... of this rank
    encoder_lora_lr: float = 5e-4  # ... at this learning rate (same schedule)


@dataclass
class SliceEntry:
    """One stored training slice: case, variant, slice index and its tight boxes (label, xyxy)."""

    case: int
    variant: str
    k: int
    boxes: list[tuple[int, tuple[int, int, int, int]]] = field(default_factory=list)


class TrainingSet:
    """Embeddings (in memory) + boxes + targets of the stored slices of ``cases``."""

    def __init__(self, cases: Sequence[DixonCase], variants: Sequence[str], folder: str | os.PathLike) -> None:
        self.cases = list(cases)
        self.entries: list[SliceEntry] = []
        self.embeddings: list[torch.Tensor] = []
        self._labels: dict[tuple[int, str], np.ndarray] = {}
        self.tail: Callable[[int], torch.Tensor] | None = None  # entry -> embedding through trained encoder stages
        self._volumes: dict[tuple[int, str], np.ndarray] = {}
        for ci, case in enumerate(self.cases):
            for v in variants:
                for k, emb, boxes, _ in stored_slices(case, folder, v, 1):
                    self._labels[(ci, v)] = case.labels_for(v)
                    self.entries.append(SliceEntry(ci, v, k, [(b.label, tuple(int(x) for x in b.xyxy)) for b in boxes]))
                    self.embeddings.append(emb.to(torch.float16))

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, i: int) -> np.ndarray:
        """Entry i's slice on the model's 0..255 scale (each contrast volume normalised once, then kept)."""
        e = self.entries[i]
        if (e.case, e.variant) not in self._volumes:
            self._volumes[(e.case, e.variant)] = self.cases[e.case].contrast(e.variant)
        return self._volumes[(e.case, e.variant)][e.k]

    def target(self, i: int, label: int, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
        """Soft target on the (size x size) logit grid: the muscle inside its tight box (this leg only)."""
        e = self.entries[i]
        sl = self._labels[(e.case, e.variant)][e.k]
        x0, y0, x1, y1 = box
        m = np.zeros(sl.shape, np.float32)
        m[y0:y1, x0:x1] = sl[y0:y1, x0:x1] == label
        t, _ = resize_pad(m, size)
        return t[0]


def _decoder(arch: str, base: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A Sam holding ``base`` (prompt encoder + mask decoder trainable, encoder unused)."""
    sam = build_sam(arch)
    sam.load_state_dict(dict(base), strict=True)
    return sam


def _decode(sam: torch.nn.Module, emb: torch.Tensor, boxes_model: torch.Tensor,
            points: tuple[torch.Tensor, torch.Tensor] | None = None,
            masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, h, w) embedding, (N, 4) model boxes, optional SAM points and (N, 1, L, L) mask prompt
    -> logits (N, L, L), IoU (N,)."""
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes_model, masks=masks)
    logits, iou = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)
    return logits[:, 0], iou[:, 0]


def simulated_clicks(sam: torch.nn.Module, emb: torch.Tensor, boxes: torch.Tensor, targets: torch.Tensor,
                     logits: torch.Tensor, rounds: Sequence[bool], rng: np.random.Generator | None, size: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refinement rounds from the box-only ``logits`` (N, L, L): in a round marked True each box gets
    a new corrective click, in one marked False none (SAM's training also has rounds where only the
    previous answer comes back, so a decoder learns to keep a good answer). Every re-decode gets every
    click so far plus the previous logits as the dense mask prompt. Returns the last answer (logits,
    IoU) with gradients (earlier ones without) and the previous answer's logits it refined. Clicks are
    placed on the L x L grid and given to SAM in model pixels."""
    if not rounds:
        raise ValueError("at least one refinement round is needed")
    n, grid = targets.shape[0], targets.shape[-1]
    to_model = size / grid
    clicks: list[list[tuple[float, float, int]]] = [[] for _ in range(n)]
    prev = logits.detach()
    truth = (targets > 0.5).cpu().numpy()
    for i, add in enumerate(rounds):
        if add:
            pred = (prev > 0).cpu().numpy()
            for b in range(n):
                c = corrective_click(pred[b], truth[b], rng)
                if c is not None:
                    clicks[b].append(((c[0] + 0.5) * to_model - 0.5, (c[1] + 0.5) * to_model - 0.5, c[2]))
        pts = point_prompt([np.asarray(c, np.float64).reshape(-1, 3) for c in clicks], emb.device)
        if i < len(rounds) - 1:
            with torch.no_grad():
                prev, _ = _decode(sam, emb, boxes, pts, prev[:, None])
        else:
            return (*_decode(sam, emb, boxes, pts, prev[:, None]), prev)
    raise AssertionError("unreachable")


def click_rounds(recipe: DecoderRecipe, rng: np.random.Generator) -> list[bool]:
    """One step's refinement rounds: 1..max_clicks click rounds, and with ``no_click_prob`` one round
    without a new click inserted at a random place (at the end included)."""
    rounds = [True] * int(rng.integers(1, recipe.max_clicks + 1))
    if rng.random() < recipe.no_click_prob:
        rounds.insert(int(rng.integers(len(rounds) + 1)), False)
    return rounds


def _batch(ts: TrainingSet, i: int, rng: np.random.Generator, recipe: DecoderRecipe, size: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embedding, jittered model-space boxes and targets for up to ``boxes_per_step`` boxes of entry i."""
    e = ts.entries[i]
    pick = rng.choice(len(e.boxes), size=min(recipe.boxes_per_step, len(e.boxes)), replace=False)
    shape = ts._labels[(e.case, e.variant)].shape[1:]
    geo = ResizePad(shape[0], shape[1], size)
    boxes, targets = [], []
    for j in pick:
        label, box = e.boxes[int(j)]
        jb = jitter_box(box, shape, recipe.jitter, recipe.jitter_px, rng)
        boxes.append(geo.box_to_model(np.asarray(jb, np.float64)))
        targets.append(ts.target(i, label, box, size))
    emb = ts.tail(i) if ts.tail is not None else ts.embeddings[i].float()
    return emb, torch.as_tensor(np.stack(boxes), dtype=torch.float32), torch.stack(targets)


def _train_step(sam: torch.nn.Module, opt: torch.optim.Optimizer, params: list, train: TrainingSet, i: int,
                rng: np.random.Generator, recipe: DecoderRecipe, size: int,
                crit: AutoWeightedLoss | None = None) -> float:
    """One optimiser step on entry ``i``: Dice + BCE, or ``crit`` (the "umedsam" loss), + IoU-head MSE,
    gradient clip; with a :class:`SAMOptimizer` the gradient is taken again at the perturbed weights (the
    same boxes, the embedding through the perturbed encoder tail). Returns the loss."""
    emb, boxes, targets = _batch(train, i, rng, recipe, size)
    sdf = None if crit is None else torch.as_tensor(signed_distance(targets.numpy()))

    def seg_loss(logits: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
        main = dice_bce(logits, targets) if crit is None else crit(logits, targets, sdf)
        return main + recipe.iou_loss_weight * iou_head_loss(iou, logits, targets)

    logits, iou = _decode(sam, emb, boxes)
    loss = seg_loss(logits, iou)
    if recipe.max_clicks > 0 and rng.random() < recipe.click_prob:
        logits2, iou2, prev = simulated_clicks(sam, emb, boxes, targets, logits, click_rounds(recipe, rng), rng, size)
        loss = loss + seg_loss(logits2, iou2)
        wrong = (prev > 0) != (targets > 0.5)
        if recipe.click_focus > 0 and bool(wrong.any()):
            loss = loss + recipe.click_focus * F.binary_cross_entropy_with_logits(logits2[wrong], targets[wrong])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
    if isinstance(opt, SAMOptimizer):
        opt.first_step(zero_grad=True)
        with frozen_batch_norm_statistics(sam):  # the perturbed pass must not move the running statistics
            emb2 = train.tail(i) if train.tail is not None else emb  # stored features: no random variant (checked)
            loss2 = seg_loss(*_decode(sam, emb2, boxes))
        loss2.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.second_step(zero_grad=True)
    else:
        opt.step()
    return float(loss.detach())


def stored_slices(case: DixonCase, folder: str | os.PathLike, variant: str, size: int):
    """(k, embedding, tight boxes, geometry) of each labelled slice of ``case`` whose embedding is stored."""
    lab = case.labels_for(variant)
    for k in case.labelled_slices():
        emb = load_embedding(folder, case.name, variant, k)
        boxes = boxes_from_labels(lab, slices=[k])
        if emb is not None and boxes:
            yield k, emb, boxes, ResizePad(lab.shape[1], lab.shape[2], size)


def validation_dsc(ens: Ensemble, cases: Sequence[DixonCase], folder: str | os.PathLike,
                   variant: str = "water") -> float:
    """Mean over cases and muscles of the volume DSC of the ensemble-mean mask, tight boxes (no jitter).

    Scored through :meth:`Ensemble.decode` (the inference path). Each muscle's mask is the union of its
    boxes' masks (mean probability >= 0.5 inside each box's window); overlaps between muscles are not
    resolved here (``musclesam evaluate`` does the full multi-muscle assembly for reported figures).
    """
    return validation_dsc_by_offset(ens, cases, folder, (0.0,), variant)[0.0]


def validation_dsc_by_offset(ens: Ensemble, cases: Sequence[DixonCase], folder: str | os.PathLike,
                             offsets: Sequence[float], variant: str = "water") -> dict[float, float]:
    """:func:`validation_dsc` for each extra logit offset b (members' p -> sigmoid(logit(p) + b), as
    :attr:`Ensemble.logit_offset` would give), from one decoding pass: offset -> mean DSC."""
    scores: dict[float, list[float]] = {float(b): [] for b in offsets}
    for case in cases:
        lab = case.labels_for(variant)
        inter = {b: {} for b in scores}
        psum = {b: {} for b in scores}
        for k, emb, boxes, geo in stored_slices(case, folder, variant, ens.input_size):
            pred = {b: {} for b in scores}
            for box in boxes:  # one box a call: batched decoding is memory-bound (slower per box) on a CPU
                res = ens.decode(emb, geo, np.array([box.xyxy], np.float64))
                x0, y0, x1, y1 = box.xyxy
                p = np.clip(res.probs_window(0, y0, y1, x0, x1), 1e-7, 1 - 1e-7)
                z = np.log(p / (1 - p))
                for b in scores:
                    pw = (1.0 / (1.0 + np.exp(-(z + b)))).mean(0) >= 0.5 if b else p.mean(0) >= 0.5
                    m = pred[b].setdefault(box.label, np.zeros(lab.shape[1:], bool))
                    m[y0:y1, x0:x1] |= pw
            for b in scores:
                for label, m in pred[b].items():
                    g = lab[k] == label
                    inter[b][label] = inter[b].get(label, 0.0) + float((m & g).sum())
                    psum[b][label] = psum[b].get(label, 0.0) + float(m.sum() + g.sum())
        for b in scores:
            scores[b] += [2 * inter[b][lbl] / psum[b][lbl] for lbl in inter[b] if psum[b][lbl] > 0]
    return {b: float(np.mean(v)) if v else float("nan") for b, v in scores.items()}


def click_validation_curve(ens: Ensemble, cases: Sequence[DixonCase], folder: str | os.PathLike, n_clicks: int,
                           mask_prompt: bool, variant: str = "water", slice_step: int = 2) -> list[float]:
    """Mean object DSC after 0..``n_clicks`` corrective clicks (index 0: the box alone), through
    :meth:`Ensemble.decode` chained as the engine chains it (every click so far, and the previous answer
    as the mask prompt when ``mask_prompt``, i.e. for an ensemble trained with clicks).

    Object = one tight box on one stored slice (every ``slice_step``-th labelled slice, to keep early
    stopping affordable); its DSC is measured in the box against the muscle there; each click is
    :func:`corrective_click` on the ensemble-mean mask in the box.
    """
    scores: list[list[float]] = [[] for _ in range(n_clicks + 1)]
    for case in cases:
        lab = case.labels_for(variant)
        for idx, (k, emb, boxes, geo) in enumerate(stored_slices(case, folder, variant, ens.input_size)):
            if idx % slice_step:
                continue
            for b in boxes:
                x0, y0, x1, y1 = b.xyxy
                truth = lab[k, y0:y1, x0:x1] == b.label
                xyxy = np.array([b.xyxy], np.float64)
                res = ens.decode(emb, geo, xyxy)
                clicks: list[tuple[int, int, int]] = []
                for level in range(n_clicks + 1):
                    pred = res.probs_window(0, y0, y1, x0, x1).mean(0) >= 0.5
                    scores[level].append(_dice2d(pred, truth))
                    if level == n_clicks:
                        break
                    c = corrective_click(pred, truth)
                    if c is not None:
                        clicks.append((c[0] + x0, c[1] + y0, c[2]))
                    if not clicks:
                        scores[level + 1].extend([scores[level][-1]] * (n_clicks - level))
                        break
                    prompt = ens.answer_prompt(res) if mask_prompt else None
                    res = ens.decode(emb, geo, xyxy, prompt, [np.asarray(clicks, np.float64)])
    return [float(np.mean(s)) if s else float("nan") for s in scores]


def _dice2d(pred: np.ndarray, truth: np.ndarray) -> float:
    """2D DSC of one object (1.0 when both are empty)."""
    s = int(pred.sum()) + int(truth.sum())
    return 1.0 if s == 0 else 2.0 * float((pred & truth).sum()) / s


def decoder_trained_prefixes(recipe: DecoderRecipe) -> tuple[str, ...]:
    """State-dict prefixes of the decoder-side parts the recipe trains: the mask decoder and
    ``recipe.train_prompt``'s prompt-encoder parts (the encoder tail is :func:`.encoder_tail.tail_prefixes`)."""
    unknown = sorted(set(recipe.train_prompt) - set(PROMPT_PARTS))
    if unknown:
        raise ValueError(f"train_prompt: unknown parts {unknown}; known: {sorted(PROMPT_PARTS)}")
    return ("mask_decoder.",) + tuple(p for part in recipe.train_prompt for p in PROMPT_PARTS[part])


def trainable_decoder_params(sam: torch.nn.Module, recipe: DecoderRecipe) -> list[torch.nn.Parameter]:
    """Freeze the image encoder and the prompt encoder except ``recipe.train_prompt``'s parts (METHODS.md
    step 5 freezes it all; clicks need the mask-prompt path trained); the mask decoder trains. Returns
    the trainable parameters."""
    prefixes = decoder_trained_prefixes(recipe)
    params = []
    for n, p in sam.named_parameters():
        p.requires_grad_(n.startswith(prefixes))
        if p.requires_grad:
            params.append(p)
    return params


def _ensemble(arch: str, base: Mapping[str, torch.Tensor], heads: Sequence[Mapping[str, torch.Tensor]]) -> Ensemble:
    """An in-memory decoder-kind ensemble from the base state and member states (the inference runtime)."""
    spec = synthetic_spec(arch, "decoder")
    return Ensemble.from_states(spec, base, [dict(h) for h in heads])


def train_decoder(base: Mapping[str, torch.Tensor], train: TrainingSet, val_cases: Sequence[DixonCase],
                  emb_folder: str | os.PathLike, out: str | os.PathLike, recipe: DecoderRecipe,
                  progress: ProgressFn = print, feature_folder: str | os.PathLike | None = None,
                  preprocess: Callable[[np.ndarray], tuple[torch.Tensor, object]] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Stage 1: fine-tune the whole mask decoder (and with ``encoder_stages`` the encoder's last stages,
    from stored features in ``feature_folder``: :mod:`.encoder_tail`; with ``augment``, ``preprocess``
    turns an augmented 0..255 slice into the encoder's input, as at inference); returns the best state
    (prompt_encoder.* + mask_decoder.* [+ the encoder tail]). Resumes from
    ``out/decoder_last.safetensors`` + ``decoder_state.json``."""
    check_recipe_options(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = get_arch(recipe.arch).img_size
    sam = _decoder(recipe.arch, base)
    state_file, last_file, best_file = out / "decoder_state.json", out / "decoder_last.safetensors", out / "decoder_best.safetensors"
    st = json.loads(state_file.read_text()) if state_file.is_file() else {"step": 0, "best": -1.0, "bad": 0, "history": []}
    if st["step"] and last_file.is_file():
        sam.load_state_dict(load_state_dict(last_file), strict=False)
        progress(f"resuming decoder training at step {st['step']}")
    if st.get("done") and best_file.is_file():
        return load_state_dict(best_file)
    params = trainable_decoder_params(sam, recipe)
    groups = [{"params": params, "base_lr": recipe.lr}]
    prefixes = DECODER_PREFIXES
    lora: EncoderLoRA | None = None
    if recipe.encoder_stages:
        # the encoder's last stages train too, from stored features of the frozen stages before them
        n, enc = recipe.encoder_stages, sam.image_encoder
        tail = tail_parameters(enc, n)
        if recipe.encoder_lora_stages:  # the tail's first stages frozen, with q/v adapters instead
            lora = _encoder_lora(enc, recipe)
            frozen = {id(p) for i in lora.stages for p in enc.layers[i].parameters()}
            tail = [p for p in tail if id(p) not in frozen]
            groups.append({"params": list(lora.parameters()), "base_lr": recipe.encoder_lora_lr})
            params = params + list(lora.parameters())
        for p in tail:
            p.requires_grad_(True)
        groups.append({"params": tail, "base_lr": recipe.encoder_lr})
        params = params + tail
        prefixes = DECODER_PREFIXES + tail_prefixes(enc, n)
        if feature_folder is None:
            raise ValueError("encoder_stages > 0 needs the folder of stored features")
        feats = [load_features(feature_folder, train.cases[e.case].name, e.variant, e.k).to(torch.float16)
                 for e in train.entries]
        train.tail = _tail_input(enc, n, feats, train, recipe, preprocess, st["step"])
    crit = _criterion(recipe, st)
    if crit is not None:
        groups.append(crit.param_group(base_lr=recipe.lr))
        params = params + list(crit.parameters())
    opt = (SAMOptimizer(groups, torch.optim.AdamW, rho=recipe.sam_rho, lr=recipe.lr, weight_decay=recipe.weight_decay)
           if recipe.sam_rho > 0 else torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay))
    rng = np.random.default_rng(recipe.seed * 7919 + st["step"])
    torch.manual_seed(recipe.seed + st["step"])

    def dec_state() -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in sam.state_dict().items() if k.startswith(prefixes)}
        return lora.merged(state) if lora is not None else state  # adapters folded in: what inference runs

    def train_mode() -> None:
        sam.train()
        if lora is not None:  # frozen stages keep inference's batch-norm statistics
            for i in lora.stages:
                sam.image_encoder.layers[i].eval()

    def validate() -> float:
        sam.eval()
        ens = _ensemble(recipe.arch, {**base, **dec_state()}, [{}])
        folder = emb_folder
        if val_cases and recipe.encoder_stages:  # the held-out slices through the tail as it is now
            folder = out / "val_embeddings"
            for case in val_cases:
                write_tail_embeddings(sam.image_encoder, recipe.encoder_stages, case, "water", feature_folder, folder)
        if not val_cases:
            dsc = float("nan")
        elif recipe.val_clicks > 0:
            curve = click_validation_curve(ens, val_cases, folder, recipe.val_clicks, recipe.click_prob > 0)
            progress(f"  validation click curve {np.round(curve, 4).tolist()}")
            dsc = float(np.mean(curve))
        else:
            dsc = validation_dsc(ens, val_cases, folder)
        train_mode()
        return dsc

    t0, losses = time.time(), []
    train_mode()
    step = st["step"]
    while step < recipe.steps:
        set_lr(opt, recipe.lr, lr_factor(step, recipe.steps, recipe.warmup_steps))
        losses.append(_train_step(sam, opt, params, train, int(rng.integers(len(train))), rng, recipe, size, crit))
        step += 1
        validating = step % recipe.val_every == 0 or step == recipe.steps
        if validating:
            dsc = validate()
            rate = (time.time() - t0) / max(len(losses), 1)
            st["history"].append({"step": step, "loss": float(np.mean(losses[-recipe.val_every:])), "val_dsc": dsc})
            progress(f"decoder step {step}/{recipe.steps}  loss {np.mean(losses[-recipe.val_every:]):.4f}  "
                     f"val DSC {dsc:.4f}  ({rate:.2f} s/step)")
            if not math.isnan(dsc) and dsc > st["best"]:
                st["best"], st["bad"], st["best_step"] = dsc, 0, step
                save_safetensors_atomic(dec_state(), best_file)
            elif not math.isnan(dsc):
                st["bad"] += 1
        if validating or step % recipe.save_every == 0:
            save_safetensors_atomic(dec_state(), last_file)
            st["step"] = step
            if crit is not None:  # the learned loss weights resume with the model
                st["loss_log_vars"] = crit.log_vars.detach().tolist()
            write_json_atomic(state_file, st)
            if validating and st["bad"] >= recipe.patience:
                progress(f"early stop at step {step}: best val DSC {st['best']:.4f} at step {st.get('best_step')}")
                break
    if not best_file.is_file():
        save_safetensors_atomic(dec_state(), best_file)
    st["done"] = True
    write_json_atomic(state_file, st)
    return load_state_dict(best_file)


def check_recipe_options(recipe: DecoderRecipe) -> None:
    """Options that cannot be honoured together, refused before any work (the recipe config's loader and
    :func:`train_decoder` both call this)."""
    _check_types(recipe)  # first: the checks below compare values
    if not 0 <= recipe.augment <= 1:
        raise ValueError(f"augment is a share of steps in 0..1, got {recipe.augment}")
    if recipe.augment and not recipe.encoder_stages:
        raise ValueError("augment needs encoder_stages > 0 (the augmented image must pass through trained encoder stages)")
    if recipe.encoder_stages and (recipe.arch != "litemedsam" or not 0 < recipe.encoder_stages <= TINYVIT_STAGES):
        raise ValueError(f"encoder_stages needs arch 'litemedsam' and 1..{TINYVIT_STAGES} (TinyViT's stages), "
                         f"got {recipe.encoder_stages} with arch {recipe.arch!r}")
    if recipe.encoder_lora_stages:
        if not 0 < recipe.encoder_lora_stages <= recipe.encoder_stages:
            raise ValueError(f"encoder_lora_stages must be 1..encoder_stages ({recipe.encoder_stages}), "
                             f"got {recipe.encoder_lora_stages}")
        if recipe.encoder_stages == TINYVIT_STAGES:
            raise ValueError("encoder_lora_stages would adapt TinyViT's stage 0, which has no attention: "
                             f"use encoder_stages <= {TINYVIT_STAGES - 1} with LoRA")
        if recipe.encoder_lora_rank < 1 or recipe.encoder_lora_lr <= 0:
            raise ValueError(f"encoder_lora_rank must be >= 1 and encoder_lora_lr > 0, got "
                             f"{recipe.encoder_lora_rank} and {recipe.encoder_lora_lr}")
    if recipe.loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {recipe.loss!r}")
    if recipe.sam_rho < 0:
        raise ValueError(f"sam_rho must be >= 0, got {recipe.sam_rho}")
    if recipe.sam_rho > 0 and (recipe.augment or recipe.max_clicks and recipe.click_prob):
        raise ValueError("sam_rho needs the same input twice a step: not with augment or simulated clicks")


def _check_types(recipe: DecoderRecipe) -> None:
    """Each setting has its default's type (a JSON 4.0 where a count belongs, or "1e-4" for a rate, is refused
    by name instead of failing inside training); integers are accepted where a rate is a float."""
    for f in fields(DecoderRecipe):
        value, default = getattr(recipe, f.name), f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, tuple):
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{f.name} must be {_TYPE_WORDS.get(type(default), type(default).__name__)}, got {value!r}")


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
               tuple: "a list of strings"}


def _encoder_lora(enc: torch.nn.Module, recipe: DecoderRecipe) -> EncoderLoRA:
    """q/v adapters on the first ``encoder_lora_stages`` stages of the ``encoder_stages`` tail."""
    first = first_tail_stage(enc, recipe.encoder_stages)
    k = recipe.encoder_lora_stages
    return EncoderLoRA(enc, range(first, first + k), recipe.encoder_lora_rank, seed=recipe.seed)


def _criterion(recipe: DecoderRecipe, st: Mapping | None = None) -> AutoWeightedLoss | None:
    """The "umedsam" loss module (its learned weights restored from a resumed run's state), else None."""
    if recipe.loss != "umedsam":
        return None
    crit = AutoWeightedLoss()
    if st and st.get("loss_log_vars"):
        with torch.no_grad():
            crit.log_vars.copy_(torch.tensor(st["loss_log_vars"], dtype=torch.float32))
    return crit


def _tail_input(enc: torch.nn.Module, n: int, feats: Sequence[torch.Tensor], train: TrainingSet,
                recipe: DecoderRecipe, preprocess: Callable | None, step: int = 0) -> Callable[[int], torch.Tensor]:
    """entry -> embedding through the trained tail: from the stored features, or (a share ``recipe.augment``
    of the calls) from the frozen stages run on a random intensity variant of the slice. ``step``: the
    step training starts at (a resumed run draws new variants, not the first steps' again)."""
    if recipe.augment <= 0:
        return lambda i: run_tail(enc, feats[i].float(), n)
    if preprocess is None:
        raise ValueError("augment needs the encoder's preprocessing (train_decoder(..., preprocess=...))")
    rng = np.random.default_rng([recipe.seed, 104729, step])

    def tail(i: int) -> torch.Tensor:
        if rng.random() >= recipe.augment:
            return run_tail(enc, feats[i].float(), n)
        x, _ = preprocess(augment_slice(train.image(i), rng))
        return run_tail(enc, head_features(enc, x, n).clone(), n)  # clone: out of inference mode
    return tail


def _head_state(sam: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The member-specific part of a decoder (see MEMBER_HEAD_PREFIXES)."""
    return {k: v.detach().clone() for k, v in sam.state_dict().items() if k.startswith(MEMBER_HEAD_PREFIXES)}


def train_heads(base: Mapping[str, torch.Tensor], decoder: Mapping[str, torch.Tensor], train: TrainingSet,
                out: str | os.PathLike, recipe: DecoderRecipe, progress: ProgressFn = print) -> list[dict[str, torch.Tensor]]:
    """Stage 2: M output-head members on the frozen stage-1 trunk; returns their head states.

    Member m: seed ``recipe.seed + 1 + m``; starts from the stage-1 heads with the hypernetwork's last
    layer perturbed by ``member_perturb`` x its std; trains on a bootstrap resample of the slices.
    Finished members are stored as ``out/member{m}.safetensors`` and skipped on resume.
    """
    out = Path(out)
    size = get_arch(recipe.arch).img_size
    state_file = out / "decoder_state.json"  # stage 1's record, with its learned loss weights
    stage1 = json.loads(state_file.read_text()) if state_file.is_file() else None
    members = []
    for m in range(recipe.members):
        path = out / f"member{m}.safetensors"
        if path.is_file():
            members.append(load_state_dict(path))
            continue
        seed = recipe.seed + 1 + m
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        sam = _decoder(recipe.arch, {**base, **decoder})
        for p in sam.parameters():
            p.requires_grad_(False)
        md = sam.mask_decoder
        head = torch.nn.ModuleList([md.output_hypernetworks_mlps[0], md.iou_prediction_head])
        with torch.no_grad():
            last = md.output_hypernetworks_mlps[0].layers[-1]
            last.weight.add_(torch.randn_like(last.weight) * recipe.member_perturb * last.weight.std())
        params = list(head.parameters())
        for p in params:
            p.requires_grad_(True)
        crit = _criterion(recipe, stage1)  # from the learned term weights of stage 1
        groups = [{"params": list(params)}]
        if crit is not None:
            groups.append(crit.param_group())
            params += list(crit.parameters())
        opt = torch.optim.AdamW(groups, lr=recipe.member_lr, weight_decay=recipe.weight_decay)
        pool = rng.integers(len(train), size=len(train)) if recipe.bootstrap else np.arange(len(train))
        sam.train()
        t0, losses = time.time(), []
        for step in range(recipe.member_steps):
            set_lr(opt, recipe.member_lr, lr_factor(step, recipe.member_steps, min(recipe.warmup_steps, 10)))
            losses.append(_train_step(sam, opt, params, train, int(pool[rng.integers(len(pool))]), rng, recipe, size, crit))
        sam.eval()
        state = _head_state(sam)
        save_safetensors_atomic(state, path)
        progress(f"member {m}: {recipe.member_steps} steps, loss {np.mean(losses[-30:]):.4f} "
                 f"({(time.time() - t0) / max(len(losses), 1):.2f} s/step)")
        members.append(state)
    return members


def recipe_dict(recipe: DecoderRecipe) -> dict:
    """JSON-ready recipe (lists for tuples)."""
    d = asdict(recipe)
    d["variants"] = list(recipe.variants)
    d["train_prompt"] = list(recipe.train_prompt)
    return d
