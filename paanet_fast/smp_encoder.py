"""Encoders of segmentation_models_pytorch (smp), timm's among them by smp's "tu-" names.

smp (and timm through it) is the optional `encoders` extra, imported only when such an encoder
is asked for, so that `import paanet_fast` and the torchvision encoders never need it.
"""
from __future__ import annotations

from types import ModuleType

import torch
import torch.nn as nn

from .encoder_weights import EncoderWeights, load_weights, read_state_dict, weights_file

INSTALL_HINT = 'pip install "paanet_fast[encoders]"'
TIMM_PREFIX = "tu-"


def import_smp(encoder_name: str) -> ModuleType:
    """segmentation_models_pytorch, or an ImportError that names the encoder and the extra."""
    try:
        import segmentation_models_pytorch
    except ImportError as exc:
        raise ImportError(f"encoder_name {encoder_name!r} is an encoder of segmentation_models_pytorch, which is "
                          f"not installed; install the optional extra: {INSTALL_HINT}") from exc
    return segmentation_models_pytorch


def is_smp_encoder(name: str) -> bool:
    """Whether smp's get_encoder builds `name` (a name of its registry, or tu-<timm model>)."""
    smp = import_smp(name)
    if name.startswith(TIMM_PREFIX):
        import timm

        return timm.is_model(name.removeprefix(TIMM_PREFIX))
    return name in smp.encoders.get_encoder_names()


def _weights_names(smp: ModuleType, name: str) -> tuple[str, ...]:
    """The named weights smp can load for `name`; a tu- encoder's one name means timm's pretrained tag."""
    if name.startswith(TIMM_PREFIX):
        import timm

        return ("imagenet",) if timm.is_model_pretrained(name.removeprefix(TIMM_PREFIX)) else ()
    return tuple(smp.encoders.encoders[name]["pretrained_settings"])


def _download_error(smp: ModuleType, name: str, weights: str, exc: OSError) -> RuntimeError:
    from huggingface_hub import constants

    if name.startswith(TIMM_PREFIX):
        import timm

        repo = timm.models.get_pretrained_cfg(name.removeprefix(TIMM_PREFIX)).hf_hub_id
        where = f"timm downloads them from the Hugging Face hub repository {repo}"
    else:
        repo = smp.encoders.encoders[name]["pretrained_settings"][weights]["repo_id"]
        where = f"smp downloads them from the Hugging Face hub repository {repo}"
    return RuntimeError(
        f"could not load the {weights} weights of {name} ({exc}). {where} once and caches them under "
        f"{constants.HF_HUB_CACHE}. Offline, either put them in that cache (or set HF_HUB_CACHE to a folder that "
        "has them, with HF_HUB_OFFLINE=1), pass encoder_weights=<path to a state-dict file of the encoder>, or "
        "pass encoder_weights=None to start from random weights.")


def timm_strides(name: str) -> list[int]:
    """The strides of the feature maps timm gives for tu-<model> `name`."""
    import timm

    with torch.device("meta"):  # only the feature description is needed, not the weights
        model = timm.create_model(name.removeprefix(TIMM_PREFIX), features_only=True, pretrained=False)
    return list(model.feature_info.reduction())


def build_smp_encoder(name: str, weights: EncoderWeights, in_channels: int) -> nn.Module:
    """smp's encoder `name` at depth 5, whose forward returns features at strides 1, 2, 4, ..., 32.

    `weights`: a weights name smp lists for the encoder ("imagenet", ...; for a tu- encoder
    "imagenet" means timm's pretrained tag, chosen in the name as tu-<model>.<tag>), a path to a
    state-dict file of the encoder as built here (same in_channels, e.g. saved from an smp model's
    `encoder.state_dict()`), or None for random weights.
    """
    smp = import_smp(name)
    path = weights_file(weights, _weights_names(smp, name), name)
    named = None if weights is None or path is not None else str(weights)
    try:
        encoder = smp.encoders.get_encoder(name, in_channels=in_channels, depth=5,
                                           weights=True if named and name.startswith(TIMM_PREFIX) else named)
    except OSError as exc:  # no network and nothing cached: say where the weights come from
        raise _download_error(smp, name, named, exc) from exc
    if path is not None:
        load_weights(encoder, read_state_dict(path), str(path), name)
    return encoder
