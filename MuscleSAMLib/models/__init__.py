"""Model layer: SAM architectures, safe weight loading, LoRA adapters, the manifest (``manifest_writer``: its one
locked writer), the device policy (``device``), loading an ensemble from a manifest (``loading``), the ensemble runtime.

Everything here is importable without Slicer; numpy/torch/segment_anything only.
"""

from __future__ import annotations

from .architectures import ARCHITECTURES, ArchSpec, build_sam, count_parameters, get_arch
from .ensemble import (
    BATCH_MODES,
    DecodeResult,
    Ensemble,
    MemberStack,
    PromptHead,
    box_mask_prompt,
    slice_resize_matrices,
    synthetic_spec,
)
from .device import resolve_device
from .lora import (
    DEFAULT_TARGETS,
    LORA_TARGETS,
    MemberLoRALinear,
    apply_lora,
    is_lora_key,
    load_lora_state_dict,
    lora_member,
    lora_modules,
    lora_state_dict,
    merge_lora,
)
from .manifest import (
    KINDS,
    PROMPT_GEOMETRIES,
    EnsembleSpec,
    LoRASpec,
    Manifest,
    WeightFile,
    load_manifest,
    manifest_hash,
    parse_manifest,
    save_manifest,
)
from .safe_load import load_into, load_state_dict, save_safetensors_atomic, sha256_file

__all__ = [
    "ARCHITECTURES", "ArchSpec", "build_sam", "count_parameters", "get_arch",
    "BATCH_MODES", "DecodeResult", "Ensemble", "MemberStack", "PromptHead", "box_mask_prompt",
    "resolve_device", "slice_resize_matrices", "synthetic_spec",
    "DEFAULT_TARGETS", "LORA_TARGETS", "MemberLoRALinear", "apply_lora", "is_lora_key", "load_lora_state_dict",
    "lora_member", "lora_modules", "lora_state_dict", "merge_lora",
    "KINDS", "PROMPT_GEOMETRIES", "EnsembleSpec", "LoRASpec", "Manifest", "WeightFile", "load_manifest",
    "manifest_hash", "parse_manifest", "save_manifest",
    "load_into", "load_state_dict", "save_safetensors_atomic", "sha256_file",
]
