"""Fine-tuning the last stages of LiteMedSAM's TinyViT image encoder without running the whole encoder.

Recipe option ``encoder_stages`` = N (:class:`~.decoder_finetune.DecoderRecipe`): the last N TinyViT
stages and the neck train together with the mask decoder, so the image features themselves adapt to
fat-infiltrated muscle (the frozen encoder was trained on other anatomy; MODEL_CARD.md). The stages
before them stay frozen, so their output ("features") is computed once per training slice and stored,
as the embeddings are for decoder-only training; a training step runs only the trainable tail.

At inference nothing changes in kind: the fine-tuned stages travel in the ensemble's shared weights
file, so there is still one encoder pass per slice for all members.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .embedding_store import DixonCase, embedding_file, load_embedding, precompute

FEATURES_KEY = "features"  # the tensor name of stored features in the embedding store's files
#: LiteMedSAM's TinyViT: stage 0 is convolutional (MBConv), stages 1-3 hold the attention blocks
TINYVIT_STAGES = 4


def first_tail_stage(encoder: nn.Module, n: int) -> int:
    """Index of the first trainable stage; a clear error for encoders without TinyViT's stages."""
    layers = getattr(encoder, "layers", None)
    if not hasattr(encoder, "neck") or not hasattr(encoder, "patch_embed") or not isinstance(layers, nn.ModuleList) \
            or hasattr(encoder, "blocks"):
        raise ValueError("encoder_stages needs LiteMedSAM's TinyViT image encoder (arch 'litemedsam')")
    if not 1 <= n <= len(layers):
        raise ValueError(f"encoder_stages must be 1..{len(layers)}, got {n}")
    return len(layers) - n


def tail_prefixes(encoder: nn.Module, n: int) -> tuple[str, ...]:
    """State-dict prefixes (in a Sam) of the trainable tail: the last ``n`` stages and the neck."""
    first = first_tail_stage(encoder, n)
    return tuple(f"image_encoder.layers.{i}." for i in range(first, len(encoder.layers))) + ("image_encoder.neck.",)


def tail_parameters(encoder: nn.Module, n: int) -> list[nn.Parameter]:
    """The trainable tail's parameters."""
    first = first_tail_stage(encoder, n)
    return [p for i in range(first, len(encoder.layers)) for p in encoder.layers[i].parameters()] + \
        list(encoder.neck.parameters())


def head_features(encoder: nn.Module, image: torch.Tensor, n: int) -> torch.Tensor:
    """(1, 3, S, S) preprocessed image -> the frozen stages' output (the tail's input), always as inference
    computes it: the frozen stages run in eval mode (their batch norms use their running statistics and
    keep them) even while the tail trains."""
    first = first_tail_stage(encoder, n)
    frozen = [encoder.patch_embed, *encoder.layers[:first]]
    modes = [m.training for m in frozen]
    try:
        for m in frozen:
            m.eval()
        with torch.inference_mode():
            x = encoder.patch_embed(image)
            for i in range(first):
                x = encoder.layers[i](x)
    finally:
        for m, mode in zip(frozen, modes):
            m.train(mode)
    return x


def run_tail(encoder: nn.Module, features: torch.Tensor, n: int) -> torch.Tensor:
    """The tail's forward pass: stored features (B, tokens, C) -> image embedding (B, 256, h, w), as
    TinyViT's own forward does after its first stages (tokens on a square grid, then the neck)."""
    first = first_tail_stage(encoder, n)
    x = features
    for i in range(first, len(encoder.layers)):
        x = encoder.layers[i](x)
    b, tokens, c = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"encoder tail output has {tokens} tokens, not a square grid")
    return encoder.neck(x.view(b, side, side, c).permute(0, 3, 1, 2))


def precompute_features(cases: Sequence[DixonCase], variants: Iterable[str], folder: str | os.PathLike,
                        preprocess: Callable, encoder: nn.Module, n: int) -> int:
    """Store the frozen stages' output of every labelled slice not yet stored (the embedding store's
    :func:`~.embedding_store.precompute`, under the key "features"); returns how many were new."""
    return precompute(cases, variants, folder, preprocess, lambda x: head_features(encoder, x, n),
                      progress=lambda m: None, key=FEATURES_KEY)


def load_features(folder: str | os.PathLike, case: str, variant: str, k: int) -> torch.Tensor:
    """Stored features as float32 (1, tokens, C)."""
    feats = load_embedding(folder, case, variant, k, key=FEATURES_KEY)
    if feats is None:
        raise FileNotFoundError(f"no stored encoder features for {case} {variant} slice {k} in {folder}")
    return feats


def write_tail_embeddings(encoder: nn.Module, n: int, case: DixonCase, variant: str, features: str | os.PathLike,
                          out: str | os.PathLike, overwrite: bool = True) -> Path:
    """Embeddings of ``case``'s labelled slices through the (trained) tail, stored where
    :func:`~.decoder_finetune.stored_slices` reads embeddings (validation, temperature fitting).
    ``overwrite`` False keeps files already there (a resumed run whose tail is final)."""
    from safetensors.torch import save_file

    from ..atomic import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    was = encoder.training
    encoder.eval()
    with torch.inference_mode():
        for k in case.labelled_slices():
            path = embedding_file(out, case.name, variant, k)
            if path.is_file() and not overwrite:
                continue
            emb = run_tail(encoder, load_features(features, case.name, variant, k), n)[0]
            with atomic_path(path) as tmp:
                save_file({"embedding": emb.to(torch.float16).contiguous()}, str(tmp))
    encoder.train(was)
    return out
