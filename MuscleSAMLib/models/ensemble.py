"""Ensemble runtime: one manifest entry turned into encode/decode calls over all M members at once.

One concern, the :class:`Ensemble` (building each kind from verified weights, and encode/decode), so
this file runs past 400 lines; its parts live beside it: :mod:`.decode_result` (what a decode returns),
:mod:`.member_stack` (M heads as one call), :mod:`.shared_trunk` (members that share the decoder
trunk), :mod:`.box_prompt` (the box as a dense prompt), :mod:`.device` (the device policy).

Kinds (DESIGN.md "Ensemble kinds"):

- ``decoder``: one shared image encoder (one pass per slice), M prompt-encoder + mask-decoder heads.
- ``lora``: one shared base with M LoRA adapter sets; the encoder runs all members as ONE batched
  forward pass (members-major batch). For decoding each member's adapters are folded into its own
  copy of the (small) decoder, so every kind decodes the same way.
- ``full``: M complete models.

Decoding always runs all members and all boxes of a slice in one call: either ``torch.func.vmap``
over the members' stacked parameters or a loop over members with all boxes batched, whichever
``batch_mode`` picks (``"auto"`` uses the measured faster one; see :data:`VMAP_MAX_BOXES`).
Member probabilities come from sigmoid AFTER the logits are brought back to the slice grid
(:func:`model_to_slice`), as SAM's postprocessing does.

Member files override base keys (see weights/README.md): a ``decoder`` member may not override
image-encoder weights, a ``lora`` member only adds adapters (+ optional decoder/prompt-encoder
weights), a ``full`` member is a whole model (the base, if any, fills keys it lacks).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import GeometryError, InputError, WeightsError
from ..slice_geometry import ResizePad, box_window, model_to_slice, resize_pad
from .batched_decode import decode_per_image
from .architectures import ArchSpec, build_sam, get_arch
from .lora import apply_lora, is_lora_key, load_lora_state_dict, lora_member, lora_state_dict, merge_lora
from .manifest import KINDS, PROMPT_GEOMETRIES, EnsembleSpec, LoRASpec
from .device import resolve_device  # noqa: F401 - THE device policy (models/device.py)
from .safe_load import load_into, load_state_dict
from .shared_trunk import SharedTrunkHeads, only_output_heads
from .box_prompt import box_mask_prompt
from .point_prompt import point_prompt, previous_answer_prompt
from .decode_result import DecodeResult, slice_resize_matrices  # noqa: F401 - re-exported
from .member_stack import MemberStack, PromptHead
from .weight_deltas import decode_int8_deltas, holds_deltas

#: "auto" batch mode uses vmap over members up to this many boxes, a member loop above (CPU timings:
#: vmap wins for a single box, per-member batched calls win from ~5 boxes on).
VMAP_MAX_BOXES = 2
BATCH_MODES = ("auto", "vmap", "loop")
_HEAD_PREFIXES = ("prompt_encoder.", "mask_decoder.")
_ENC_PREFIX = "image_encoder."


def _check_boxes(boxes_xyxy: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(N, 4) finite boxes with positive size that overlap the slice, as float64."""
    b = np.asarray(boxes_xyxy, dtype=np.float64)
    if b.ndim == 1 and b.shape == (4,):
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
        raise InputError(f"boxes must have shape (N, 4) with N >= 1, got {b.shape}")
    if not np.isfinite(b).all():
        raise InputError("boxes contain NaN or infinite coordinates")
    bad = np.nonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))[0]
    if bad.size:
        raise GeometryError(f"box {b[bad[0]].tolist()} has no area (need x1 > x0 and y1 > y0)")
    out = np.nonzero((b[:, 0] >= cols) | (b[:, 1] >= rows) | (b[:, 2] <= 0) | (b[:, 3] <= 0))[0]
    if out.size:
        raise GeometryError(f"box {b[out[0]].tolist()} lies outside the {rows}x{cols} slice")
    return b


def _clicks_to_model(geo: ResizePad, clicks: Any, i: int) -> np.ndarray:
    """One box's clicks (P, 3) of (x, y, 1 | 0) slice pixels -> the same rows in model pixels."""
    a = np.asarray(clicks, np.float64)
    a = a.reshape(-1, 3) if a.size else np.zeros((0, 3))
    if not np.isfinite(a).all():
        raise InputError(f"points of box #{i + 1} must be finite rows of (x, y, 1 | 0)")
    return np.column_stack([geo.point_to_model(a[:, :2]), a[:, 2]])


def _xyxy(window_rrcc: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) window -> (x0, y0, x1, y1)."""
    r0, r1, c0, c1 = window_rrcc
    return int(c0), int(r0), int(c1), int(r1)


def _float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors as float32 (checkpoints may be half precision); others unchanged."""
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def _split(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict, list[str]]:
    """Sam state -> (image-encoder state without prefix, head state, keys belonging to neither)."""
    enc = {k[len(_ENC_PREFIX):]: v for k, v in state.items() if k.startswith(_ENC_PREFIX)}
    head = {k: v for k, v in state.items() if k.startswith(_HEAD_PREFIXES)}
    other = sorted(k for k in state if not k.startswith(_ENC_PREFIX) and not k.startswith(_HEAD_PREFIXES))
    return enc, head, other


def _tensor_digest(parts: Sequence[Mapping[str, torch.Tensor]]) -> str:
    """sha256 over names and bytes of tensors (group key of in-memory ensembles)."""
    h = hashlib.sha256()
    for state in parts:
        for k in sorted(state):
            t = state[k].detach().to("cpu").contiguous()
            h.update(k.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _meta_sam(arch: ArchSpec) -> nn.Module:
    """An unallocated Sam (filled later with load_into(assign=True))."""
    with torch.device("meta"):
        return build_sam(arch)


class Ensemble:
    """Runtime of one manifest entry (see module docstring). Build with :meth:`from_spec`,
    :meth:`from_states`, :meth:`from_models` or :meth:`random`."""

    def __init__(self, spec: EnsembleSpec, encoder: nn.Module | MemberStack, heads: MemberStack | SharedTrunkHeads,
                 device: torch.device, group_key: str, batch_mode: str = "auto") -> None:
        if batch_mode not in BATCH_MODES:
            raise ValueError(f"batch_mode must be one of {BATCH_MODES}")
        self.spec = spec
        self.arch: ArchSpec = spec.arch
        self.kind: str = spec.kind
        self.members: int = heads.count
        #: Ensembles whose members join this one's in every answer (the manifest's ``join``, attached by
        #: :func:`~MuscleSAMLib.models.loading.load_spec`); each keeps its own weights, geometry and calibration.
        self.joined: tuple["Ensemble", ...] = ()
        self.device = device
        self.group_key = group_key
        self.batch_mode = batch_mode
        self._encoder = encoder
        self._heads = heads
        self._mean = torch.tensor(spec.pixel_mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(spec.pixel_std, dtype=torch.float32).view(3, 1, 1)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_spec(cls, spec: EnsembleSpec, device: str | torch.device | None = "cpu",
                  batch_mode: str = "auto") -> "Ensemble":
        """Load a manifest entry: every file checksum-verified before it is read (WeightsError)."""
        base, members = spec_states(spec)
        key_src = {"arch": spec.arch.to_dict(), "input": spec.input_size, "mean": spec.pixel_mean,
                   "std": spec.pixel_std, "kind": spec.kind, "geometry": spec.prompt_geometry,
                   "base": spec.base.sha256 if spec.base else None}
        if spec.shared is not None and _holds_encoder_keys(spec.shared.resolved()):
            key_src["encoder_shared"] = spec.shared.sha256  # fine-tuned encoder stages: other embeddings
        if spec.kind != "decoder":
            key_src["members"] = [f.sha256 for f in spec.members]
            key_src["lora"] = [spec.lora.rank, spec.lora.alpha, list(spec.lora.targets)] if spec.lora else None
        group_key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
        return cls.from_states(spec, base, members, device=device, batch_mode=batch_mode, group_key=group_key,
                               names=[str(f.path) for f in spec.members],
                               base_name=str(spec.base.path) if spec.base else "")

    @classmethod
    def from_states(cls, spec: EnsembleSpec, base_state: Mapping[str, torch.Tensor],
                    member_states: Sequence[Mapping[str, torch.Tensor]], *, device: str | torch.device | None = "cpu",
                    batch_mode: str = "auto", group_key: str | None = None, names: Sequence[str] | None = None,
                    base_name: str = "") -> "Ensemble":
        """Build from in-memory state dicts (keys as in a Sam); ``spec`` supplies kind, arch, geometry.

        ``spec.members`` may be empty here (the member count comes from ``member_states``).
        """
        if spec.kind not in KINDS:
            raise WeightsError(f"unknown ensemble kind {spec.kind!r}; known: {', '.join(KINDS)}")
        if not member_states:
            raise WeightsError(f"ensemble {spec.name!r} has no members")
        arch = spec.arch
        dev = resolve_device(device)
        names = list(names) if names else [f"member {m}" for m in range(len(member_states))]
        base_name = base_name or "base weights"
        base = _float32(base_state)
        mstates = [_float32(s) for s in member_states]
        enc_digest: list[Mapping[str, torch.Tensor]] = []
        if spec.kind == "decoder":
            encoder, heads, enc_digest = cls._build_decoder_kind(arch, base, mstates, names, base_name, dev)
        elif spec.kind == "full":
            encoder, heads, enc_digest = cls._build_full_kind(arch, base, mstates, names, base_name, batch_mode)
        else:
            encoder, heads, enc_digest = cls._build_lora_kind(arch, spec.lora or LoRASpec(), base, mstates, names, base_name)
        if group_key is None:
            group_key = hashlib.sha256((spec.kind + spec.prompt_geometry + json.dumps(arch.to_dict(), sort_keys=True)
                                        + str(spec.pixel_mean) + str(spec.pixel_std)
                                        + _tensor_digest(enc_digest)).encode()).hexdigest()[:24]
        if isinstance(encoder, MemberStack):
            encoder.to(dev)
        else:
            encoder.to(dev).eval()
        heads.to(dev)
        return cls(spec, encoder, heads, dev, group_key, batch_mode)

    @staticmethod
    def _head(arch: ArchSpec, state: Mapping[str, torch.Tensor], what: str) -> PromptHead:
        """A PromptHead filled (strictly) from prompt_encoder.* / mask_decoder.* keys."""
        sam = _meta_sam(arch)
        head = PromptHead(sam.prompt_encoder, sam.mask_decoder)
        load_into(head, state, strict=True, what=what, arch=arch.name, assign=True)
        return head.eval()

    @staticmethod
    def _encoder(arch: ArchSpec, state: Mapping[str, torch.Tensor], what: str) -> nn.Module:
        """An image encoder filled (strictly) from its prefix-free state."""
        enc = _meta_sam(arch).image_encoder
        load_into(enc, state, strict=True, what=what, arch=f"{arch.name} image encoder", assign=True)
        return enc.eval()

    @classmethod
    def _build_decoder_kind(cls, arch: ArchSpec, base: dict, members: list[dict], names: list[str],
                            base_name: str, device: torch.device | None = None
                            ) -> tuple[nn.Module, MemberStack | SharedTrunkHeads, list]:
        enc_state, base_head, other = _split(base)
        if other:
            raise WeightsError(f"checkpoint {base_name} does not match architecture {arch.name}: unexpected keys {other[:10]}")
        encoder = cls._encoder(arch, enc_state, base_name)
        heads = []
        for m, (state, name) in enumerate(zip(members, names)):
            if any(k.startswith(_ENC_PREFIX) for k in state):
                raise WeightsError(f"member file {name} overrides image-encoder weights; a decoder ensemble "
                                   "shares one encoder (use kind full)")
            heads.append(cls._head(arch, {**base_head, **state}, name))
        if all(only_output_heads(list(state)) for state in members):
            # Members differ only in output heads: run the decoder trunk once for all of them.
            chunk = 1 if device is None or device.type == "cpu" else 64
            return encoder, SharedTrunkHeads(heads[0].prompt_encoder, heads[0].mask_decoder,
                                             [h.mask_decoder for h in heads], chunk=chunk), [enc_state]
        return encoder, MemberStack(heads), [enc_state]

    @classmethod
    def _build_full_kind(cls, arch: ArchSpec, base: dict, members: list[dict], names: list[str], base_name: str,
                         batch_mode: str) -> tuple[MemberStack, MemberStack, list]:
        encoders, heads, digest = [], [], []
        for state, name in zip(members, names):
            enc_state, head_state, other = _split({**base, **state})
            if other:
                raise WeightsError(f"checkpoint {name} does not match architecture {arch.name}: unexpected keys {other[:10]}")
            encoders.append(cls._encoder(arch, enc_state, name))
            heads.append(cls._head(arch, head_state, name))
            digest.append(enc_state)
        keep = "vmap" if batch_mode == "vmap" else "loop"  # big encoders: hold one representation only
        return MemberStack(encoders, keep=keep), MemberStack(heads), digest

    @classmethod
    def _build_lora_kind(cls, arch: ArchSpec, lora: LoRASpec, base: dict, members: list[dict], names: list[str],
                         base_name: str) -> tuple[nn.Module, MemberStack, list]:
        sam = _meta_sam(arch)
        _, _, other = _split(base)
        if other:
            raise WeightsError(f"checkpoint {base_name} does not match architecture {arch.name}: unexpected keys {other[:10]}")
        load_into(sam, {k: v for k, v in base.items() if not is_lora_key(k)}, strict=True, what=base_name,
                  arch=arch.name, assign=True)
        apply_lora(sam, rank=lora.rank, members=len(members), alpha=lora.alpha, targets=lora.targets)
        head_lora = PromptHead(sam.prompt_encoder, sam.mask_decoder)
        head_keys = set(head_lora.state_dict())
        heads = []
        for m, (state, name) in enumerate(zip(members, names)):
            load_lora_state_dict(sam, state, member=m, what=name)
            overrides = {k: v for k, v in state.items() if not is_lora_key(k)}
            bad = sorted(k for k in overrides if k not in head_keys)
            if bad:
                raise WeightsError(f"LoRA member file {name} has keys that are neither adapters nor decoder/prompt-"
                                   f"encoder weights (encoder weights need kind full): {bad[:10]}")
            head = head_lora
            if overrides:
                head = copy.deepcopy(head_lora)
                load_into(head, overrides, strict=False, what=name, arch=arch.name)
            heads.append(merge_lora(head, m).eval())
        encoder = sam.image_encoder.eval()
        digest = [{k: v for k, v in base.items() if k.startswith(_ENC_PREFIX)},
                  {k: v for k, v in lora_state_dict(sam).items() if k.startswith(_ENC_PREFIX)}]
        return encoder, MemberStack(heads), digest

    @classmethod
    def from_models(cls, kind: str, models: Sequence[nn.Module], *, spec: EnsembleSpec | None = None,
                    lora: LoRASpec | None = None, device: str | torch.device | None = "cpu",
                    batch_mode: str = "auto", **spec_fields: Any) -> "Ensemble":
        """Ensemble from trained Sam models (training/tests).

        ``decoder``: M Sams; the encoder of the first is shared. ``full``: M Sams. ``lora``: M Sams each
        with ``apply_lora(members=1)`` and identical frozen bases (member 0 adapters + their decoder
        heads are taken). ``spec_fields`` (e.g. box_mask_prompt=True) fill a synthetic spec when
        ``spec`` is None.
        """
        models = list(models)
        if not models:
            raise WeightsError("from_models needs at least one model")
        first = {k: v.detach() for k, v in models[0].state_dict().items()}
        if kind == "lora":
            base = {k: v for k, v in first.items() if not is_lora_key(k)}
            members = []
            for mod in models:
                st = mod.state_dict()
                enc = {k: v for k, v in st.items() if k.startswith(_ENC_PREFIX) and not is_lora_key(k)}
                if any(not torch.equal(v, base[k]) for k, v in enc.items()):
                    raise WeightsError("LoRA members must share one frozen image encoder (they differ)")
                heads = {k: v.detach() for k, v in st.items() if k.startswith(_HEAD_PREFIXES) and not is_lora_key(k)}
                members.append({**lora_state_dict(mod, member=0), **heads})
        elif kind == "decoder":
            base = {k: v for k, v in first.items() if k.startswith(_ENC_PREFIX)}
            members = [{k: v.detach() for k, v in m.state_dict().items() if k.startswith(_HEAD_PREFIXES)} for m in models]
        else:
            base, members = {}, [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
        if spec is None:
            arch = spec_fields.pop("arch", None)
            if arch is None:
                raise WeightsError("from_models without a spec needs arch=...")
            spec = synthetic_spec(arch, kind, lora=lora, **spec_fields)
        return cls.from_states(spec, base, members, device=device, batch_mode=batch_mode)

    @classmethod
    def random(cls, arch: str | ArchSpec = "demo_xs", kind: str = "decoder", members: int = 3, seed: int = 0, *,
               device: str | torch.device | None = "cpu", lora_rank: int = 4, batch_mode: str = "auto",
               **spec_fields: Any) -> "Ensemble":
        """Randomly initialised ensemble for tests (members differ; reproducible for a seed; the global
        torch RNG is left untouched)."""
        a = get_arch(arch)
        lora = LoRASpec(rank=lora_rank, alpha=float(lora_rank)) if kind == "lora" else None
        spec = synthetic_spec(a, kind, lora=lora, **spec_fields)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sams = [build_sam(a) for _ in range(1 if kind == "lora" else members)]
            if kind == "lora":
                apply_lora(sams[0], rank=lora_rank, members=members, alpha=float(lora_rank), seed=seed)
                with torch.no_grad():  # non-zero B so members differ (trained adapters would)
                    for name, p in sams[0].named_parameters():
                        if name.endswith("lora_B"):
                            p.normal_(0.0, 0.05)
        if kind == "lora":
            st = sams[0].state_dict()
            base = {k: v for k, v in st.items() if not is_lora_key(k)}
            mstates = [lora_state_dict(sams[0], member=m) for m in range(members)]
        elif kind == "decoder":
            base = {k: v for k, v in sams[0].state_dict().items() if k.startswith(_ENC_PREFIX)}
            mstates = [{k: v for k, v in s.state_dict().items() if k.startswith(_HEAD_PREFIXES)} for s in sams]
        else:
            base, mstates = {}, [s.state_dict() for s in sams]
        return cls.from_states(spec, base, mstates, device=device, batch_mode=batch_mode)

    # ---------------------------------------------------------------- inference

    @property
    def member_maps(self) -> int:
        """How many member maps each answer of the engine holds by default: M, then each joined ensemble's members;
        with the mirrored view every part answers both views, in the order M, M mirrored, then each joined J,
        J mirrored (so twice the count)."""
        return (self.members + sum(e.members for e in self.joined)) * (2 if self.spec.mirror_view else 1)

    @property
    def input_size(self) -> int:
        """Side of the square model input."""
        return self.spec.input_size

    @property
    def lowres_size(self) -> int:
        """Side L of the low-resolution logit grid (and of the dense mask prompt)."""
        return self.arch.lowres_size

    def preprocess(self, slice2d_0_255: np.ndarray) -> tuple[torch.Tensor, ResizePad]:
        """(rows, cols) slice in 0..255 -> normalised (1, 3, S, S) CPU tensor and its geometry.

        Three identical channels, longest side resized to S, normalised with the spec's pixel mean/std,
        then the bottom/right padding is zero (SAM normalises first, then pads).
        """
        s = np.asarray(slice2d_0_255)
        if s.ndim != 2 or min(s.shape) < 1:
            raise InputError(f"expected a 2D slice, got shape {s.shape}")
        if not np.isfinite(s).all():
            raise InputError("slice contains NaN or infinite values")
        resized, geo = resize_pad(s.astype(np.float32, copy=False), self.input_size)
        h, w = geo.resized_shape
        out = torch.zeros((3, self.input_size, self.input_size), dtype=torch.float32)
        out[:, :h, :w] = (resized[:, :h, :w] - self._mean) / self._std
        return out[None], geo

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> embeddings.

        ``decoder``: (B, C, h, w), one shared pass. ``lora``: (M, B, C, h, w), members batched in one
        forward pass. ``full``: (M, B, C, h, w).
        """
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.input_size, self.input_size):
            raise InputError(f"images must be (B, 3, {self.input_size}, {self.input_size}), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        with torch.inference_mode():
            if self.kind == "decoder":
                return self._encoder(x)
            if self.kind == "lora":
                with lora_member(self._encoder, None):
                    y = self._encoder(x.repeat(self.members, 1, 1, 1))  # members-major batch
                return y.view(self.members, x.shape[0], *y.shape[1:])
            return self._encoder((x,), (False,), "loop" if self._encoder.modules is not None else "vmap")

    def _mode(self, n_boxes: int) -> str:
        if self.batch_mode != "auto":
            return self.batch_mode
        return "vmap" if n_boxes <= VMAP_MAX_BOXES else "loop"

    @property
    def temperature(self) -> float:
        """The temperature baked into the member heads (manifest training record; 1 when none): member
        logits are raw logits / T (+ :attr:`logit_offset`), which matters when an answer is fed back as a
        mask prompt."""
        t = (self.spec.training or {}).get("temperature", 1.0)
        return float(t) if t else 1.0

    @property
    def logit_offset(self) -> float:
        """Added to every member's (tempered) mask logits as they leave the decoder (manifest training
        record ``logit_offset``; 0 when none). Fitted with the temperature on held-out subjects: it moves
        the 0.5 decision boundary where the validation DSC is best (a model that draws muscles too small
        gets a positive offset), so every mask, member mask, probability and click answer uses it alike."""
        return self.spec.logit_offset

    @property
    def trained_for_clicks(self) -> bool:
        """True when the manifest's training record says the decoder was trained with simulated clicks
        (``recipe.click_prob`` > 0); an ensemble trained on boxes alone may not use clicks well."""
        recipe = (self.spec.training or {}).get("recipe") or {}
        return float(recipe.get("click_prob", 0) or 0) > 0

    def answer_prompt(self, previous: DecodeResult | np.ndarray, box: int | None = None) -> torch.Tensor:
        """A previous answer as the dense mask prompt of a refinement (:func:`previous_answer_prompt`):
        (N, L, L), or (1, L, L) for box ``box`` of it."""
        logits = previous.logits_lowres if isinstance(previous, DecodeResult) else np.asarray(previous)
        if box is not None:
            logits = logits[:, box:box + 1]
        return previous_answer_prompt(np.asarray(logits) - self.logit_offset, self.temperature)

    def decode(self, embeddings: torch.Tensor, geo: ResizePad, boxes_xyxy: np.ndarray,
               mask_prompts: np.ndarray | torch.Tensor | None = None,
               points: Sequence[np.ndarray] | None = None) -> DecodeResult:
        """All members x all N boxes of one slice in one batched call -> :class:`DecodeResult`.

        The decoders run here; slice-grid probabilities are computed when first read
        (``result.probs``) or per box window (``result.probs_window``), which is much cheaper.

        ``embeddings``: this slice's output of :meth:`encode` (B=1; the batch axis may be dropped).
        ``boxes_xyxy``: (N, 4) half-open slice pixels. ``mask_prompts``: optional dense prompts as
        low-res logits, (N, L, L) shared or (M, N, L, L) per member (e.g. a previous
        ``logits_lowres``, see :meth:`answer_prompt`); when None and the spec sets ``box_mask_prompt``, the
        box itself is used (:func:`box_mask_prompt`). ``points``: optional clicks per box, each a (P, 3)
        array of (x, y, 1 | 0) slice pixel indices (checked by the caller,
        :func:`~MuscleSAMLib.engine.clicks.check_clicks`); every member gets the same clicks.
        """
        if geo.size != self.input_size:
            raise InputError(f"geometry is for input {geo.size}, the ensemble takes {self.input_size}")
        boxes = _check_boxes(boxes_xyxy, geo.rows, geo.cols)
        n, mm, L = boxes.shape[0], self.members, self.lowres_size
        emb = embeddings.to(self.device, torch.float32)
        if self.kind == "decoder":
            emb = emb[None] if emb.ndim == 3 else emb
            if emb.ndim != 4 or emb.shape[0] != 1:
                raise InputError(f"decoder-kind embeddings must be (1, C, h, w), got {tuple(embeddings.shape)}")
        else:
            emb = emb[:, None] if emb.ndim == 4 and emb.shape[0] == mm and embeddings.ndim == 4 else emb
            if emb.ndim != 5 or emb.shape[0] != mm or emb.shape[1] != 1:
                raise InputError(f"{self.kind}-kind embeddings must be ({mm}, 1, C, h, w), got {tuple(embeddings.shape)}")
        bm = torch.as_tensor(geo.box_to_model(boxes), dtype=torch.float32, device=self.device)
        masks, masks_per_member = self._mask_input(bm, mask_prompts, n, mm, L)
        coords, labels = self._point_input(geo, points, n)
        flags = (self.kind != "decoder", False, masks_per_member, False, False)
        # Boxes with different click counts are decoded in groups of equal count: SAM's padding token
        # would otherwise change a box's answer depending on the other boxes in the call.
        counts = [len(p) for p in points] if points is not None else [0] * n
        lowres = torch.empty((mm, n, L, L), dtype=torch.float32)
        iou = torch.empty((mm, n), dtype=torch.float32)
        with torch.inference_mode():
            for c in sorted(set(counts)):
                idx = torch.tensor([i for i in range(n) if counts[i] == c])
                mk = None if masks is None else (masks[:, idx] if masks_per_member else masks[idx])
                pc, pl = (None, None) if c == 0 else (coords[idx, :c], labels[idx, :c])
                lo, q = self._heads((emb, bm[idx], mk, pc, pl), flags, self._mode(len(idx)))
                lowres[:, idx], iou[:, idx] = lo[:, :, 0].float().cpu(), q[:, :, 0].float().cpu()
        if self.logit_offset:
            lowres += self.logit_offset
        return DecodeResult(lowres.numpy(), iou.numpy(), geo=geo)

    def decode_crops(self, embeddings: torch.Tensor, geos: Sequence[ResizePad], boxes_xyxy: np.ndarray,
                     points: Sequence[np.ndarray] | None = None,
                     mask_prompts: torch.Tensor | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Box-crop geometry: N crops, each with its own embedding and box, decoded in one batch per member.

        ``embeddings``: (N, C, h, w) for the ``decoder`` kind (shared by the members) or
        (M, N, C, h, w); ``geos[n]`` the crop's geometry; ``boxes_xyxy`` (N, 4) in crop pixels.
        ``points``: optional clicks per box in crop pixels; ``mask_prompts`` optional (N, L, L) dense
        prompts (a previous answer). Returns per box the member probabilities on its crop grid,
        (M, rows_n, cols_n) float32, the IoU predictions (M, N) and the low-res logits (M, N, L, L).
        Same values as :meth:`decode` box by box.
        """
        n, mm = len(geos), self.members
        if boxes_xyxy.shape != (n, 4):
            raise InputError(f"decode_crops needs one box per crop: {n} crops, boxes {tuple(boxes_xyxy.shape)}")
        if self._heads.modules is None:
            raise InputError("decode_crops needs the member modules (batch_mode 'vmap' only holds stacked parameters)")
        boxes = np.stack([_check_boxes(boxes_xyxy[i:i + 1], g.rows, g.cols)[0] for i, g in enumerate(geos)])
        bm = torch.as_tensor(np.stack([g.box_to_model(b) for g, b in zip(geos, boxes)]), dtype=torch.float32,
                             device=self.device)
        masks = None
        if mask_prompts is not None:
            masks = torch.as_tensor(mask_prompts, dtype=torch.float32).to(self.device)[:, None]
        elif self.spec.box_mask_prompt:
            masks = box_mask_prompt(bm, self.input_size, self.lowres_size, self.spec.box_mask_logit).to(self.device)
        pts = None if points is None else point_prompt(
            [_clicks_to_model(g, p, i) for i, (g, p) in enumerate(zip(geos, points))], self.device)
        emb = embeddings.to(self.device, torch.float32)
        probs = [np.empty((mm, g.rows, g.cols), np.float32) for g in geos]
        iou = np.empty((mm, n), np.float32)
        lowres = np.empty((mm, n, self.lowres_size, self.lowres_size), np.float32)
        with torch.inference_mode():
            for m, head in enumerate(self._heads.modules):
                e = emb if self.kind == "decoder" else emb[m]
                logits, q = decode_per_image(head.prompt_encoder, head.mask_decoder, e, bm, masks, pts)
                if self.logit_offset:
                    logits = logits + self.logit_offset
                iou[m] = q.float().cpu().numpy()
                lowres[m] = logits.float().cpu().numpy()
                for i, g in enumerate(geos):
                    probs[i][m] = torch.sigmoid(model_to_slice(logits[i], g)).cpu().numpy()
        return probs, iou, lowres

    def _point_input(self, geo: ResizePad, points: Sequence[np.ndarray] | None,
                     n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Clicks per box (slice pixels) -> SAM's padded (coords, labels) in model pixels, or (None, None)."""
        if points is None:
            return None, None
        if len(points) != n:
            raise InputError(f"points must hold one list per box: {n} boxes, {len(points)} point lists")
        pts = point_prompt([_clicks_to_model(geo, p, i) for i, p in enumerate(points)], self.device)
        return (None, None) if pts is None else pts

    def _mask_input(self, boxes_model: torch.Tensor, mask_prompts: Any, n: int, mm: int,
                    L: int) -> tuple[torch.Tensor | None, bool]:
        """Dense prompt as (N, 1, L, L) shared or (M, N, 1, L, L) per member, or None."""
        if mask_prompts is None:
            if not self.spec.box_mask_prompt:
                return None, False
            return box_mask_prompt(boxes_model, self.input_size, L, self.spec.box_mask_logit).to(self.device), False
        t = torch.as_tensor(np.asarray(mask_prompts) if not isinstance(mask_prompts, torch.Tensor) else mask_prompts,
                            dtype=torch.float32).to(self.device)
        if t.shape == (n, L, L):
            return t[:, None], False
        if t.shape == (mm, n, L, L):
            return t[:, :, None], True
        raise InputError(f"mask_prompts must be ({n}, {L}, {L}) or ({mm}, {n}, {L}, {L}), got {tuple(t.shape)}")

    def predict(self, slice2d_0_255: np.ndarray, boxes_xyxy: np.ndarray,
                mask_prompts: np.ndarray | torch.Tensor | None = None,
                points: Sequence[np.ndarray] | None = None) -> DecodeResult:
        """Uncached convenience: preprocess + encode + decode, honouring the spec's prompt geometry.

        ``box_crop``: each box's crop window (:func:`~MuscleSAMLib.slice_geometry.box_window` with the
        spec's ``crop_margin``, the convention training uses) is encoded on its own (all crops as one
        encoder batch) and decoded with the box in crop coordinates; probabilities are pasted back onto
        the slice (0 outside the window) and ``windows`` is filled.
        """
        s = np.asarray(slice2d_0_255)
        if self.spec.prompt_geometry == "slice":
            img, geo = self.preprocess(s)
            return self.decode(self.encode(img), geo, boxes_xyxy, mask_prompts, points)
        if self.spec.prompt_geometry == "legs":
            raise InputError(f"{self.spec.name}: the 'legs' prompt geometry crops each leg as the whole volume "
                             "shows it; run it through MuscleSAMLib.engine.Segmenter, not one slice at a time")
        if s.ndim != 2:
            raise InputError(f"expected a 2D slice, got shape {s.shape}")
        rows, cols = s.shape
        boxes = _check_boxes(boxes_xyxy, rows, cols)
        windows = np.array([_xyxy(box_window(tuple(int(v) for v in b), (rows, cols), margin=self.spec.crop_margin))
                            for b in boxes], dtype=np.int64)
        crops = [self.preprocess(s[y0:y1, x0:x1]) for x0, y0, x1, y1 in windows]
        emb = self.encode(torch.cat([c[0] for c in crops]))
        n, mm = boxes.shape[0], self.members
        probs = np.zeros((mm, n, rows, cols), dtype=np.float32)
        logits = np.empty((mm, n, self.lowres_size, self.lowres_size), dtype=np.float32)
        iou = np.empty((mm, n), dtype=np.float32)
        for i, ((x0, y0, x1, y1), (_, geo)) in enumerate(zip(windows, crops)):
            e = emb[i:i + 1] if self.kind == "decoder" else emb[:, i:i + 1]
            mp = None
            if mask_prompts is not None:
                mpa = mask_prompts
                mp = mpa[i:i + 1] if np.ndim(mpa) == 3 else mpa[:, i:i + 1]
            pp = None
            if points is not None:
                a = np.asarray(points[i], np.float64).reshape(-1, 3)
                pp = [a - np.array([x0, y0, 0.0]) if a.size else a]
            r = self.decode(e, geo, boxes[i:i + 1] - np.array([x0, y0, x0, y0], dtype=np.float64), mp, pp)
            probs[:, i, y0:y1, x0:x1] = r.probs[:, 0]
            logits[:, i], iou[:, i] = r.logits_lowres[:, 0], r.iou_pred[:, 0]
        return DecodeResult(logits, iou, probs=probs, windows=windows)

    def __repr__(self) -> str:
        return (f"Ensemble(name={self.spec.name!r}, kind={self.kind}, arch={self.arch.name}, members={self.members}, "
                f"input={self.input_size}, device={self.device}, group_key={self.group_key})")


def spec_states(spec: EnsembleSpec) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A manifest entry's weights, each file checksum-verified: (base with the shared decoder weights
    applied, one state per member file). A member's keys override the base's (weights/README.md)."""
    base = load_state_dict(spec.base.resolved(), spec.base.sha256) if spec.base else {}
    if spec.shared is not None:  # weights common to all members, on top of the base (decoder; may hold
        # fine-tuned image-encoder stages: still one encoder, one pass per slice, for every member)
        shared = load_state_dict(spec.shared.resolved(), spec.shared.sha256)
        if holds_deltas(shared):  # stored as int8 differences from the base (models/weight_deltas.py)
            shared = decode_int8_deltas(shared, base, f"shared weights file {spec.shared.path}")
        if spec.kind != "decoder" and any(k.startswith(_ENC_PREFIX) for k in shared):
            raise WeightsError(f"shared weights file {spec.shared.path} overrides image-encoder weights; only a "
                               f"decoder ensemble (one shared encoder) may carry fine-tuned encoder stages")
        unknown = sorted(set(shared) - set(base)) if base else []
        if unknown:
            raise WeightsError(f"shared weights file {spec.shared.path} has keys the base {spec.base.path} lacks "
                               f"({unknown[0]}, ...): it was made for another architecture")
        base = {**base, **shared}
    return base, [load_state_dict(f.resolved(), f.sha256) for f in spec.members]


def _holds_encoder_keys(path) -> bool:
    """Whether a safetensors file holds image-encoder weights (reads its header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any(k.startswith(_ENC_PREFIX) for k in f.keys())


def synthetic_spec(arch: str | ArchSpec, kind: str, *, lora: LoRASpec | None = None, name: str = "",
                   **fields: Any) -> EnsembleSpec:
    """An EnsembleSpec with no files (for in-memory ensembles); normalisation defaults to the arch's."""
    a = get_arch(arch)
    if kind not in KINDS:
        raise WeightsError(f"unknown ensemble kind {kind!r}; known: {', '.join(KINDS)}")
    geometry = fields.get("prompt_geometry", "slice")
    if geometry not in PROMPT_GEOMETRIES:
        raise WeightsError(f"prompt_geometry {geometry!r} is not one of {', '.join(PROMPT_GEOMETRIES)}")
    defaults: dict[str, Any] = dict(pixel_mean=a.pixel_mean, pixel_std=a.pixel_std, members=(),
                                    crop_margin=0.25 if geometry == "box_crop" else 0.0,
                                    licence="none (in-memory)", version="0")
    defaults.update(fields)
    if kind == "lora" and lora is None:
        lora = LoRASpec()
    return EnsembleSpec(name=name or f"in-memory-{a.name}-{kind}", kind=kind, arch=a, arch_name=a.name,
                        input_size=a.img_size, lora=lora, **defaults)


__all__ = ["BATCH_MODES", "DecodeResult", "Ensemble", "MemberStack", "PromptHead", "VMAP_MAX_BOXES",
           "box_mask_prompt", "resolve_device", "slice_resize_matrices", "spec_states", "synthetic_spec"]
