"""PAANet's encoders: torchvision's ResNets, or any encoder of segmentation_models_pytorch (smp).

Every encoder follows smp's interface: forward(x) returns a list of feature maps whose entry i
is at stride 2**i (entry 0 is the input itself, a stride smp does not have is an entry with 0
channels), and `out_channels` gives their channel counts. PAANet reads entries 2..5, the
strides 4, 8, 16 and 32.

Names: "resnet18", "resnet34", "resnet50", "resnet101" are torchvision's (no extra dependency);
every other name is smp's (`segmentation_models_pytorch.encoders.get_encoder_names()`, or
"tu-<timm model>"). "smp:<name>" asks for smp's encoder where torchvision's has the same name
("smp:resnet50").
"""
from __future__ import annotations

import torch.nn as nn

from .encoder_weights import EncoderWeights
from .resnet_encoder import RESNET_NAMES, ResNetEncoder
from .smp_encoder import INSTALL_HINT, TIMM_PREFIX, build_smp_encoder, import_smp, is_smp_encoder, timm_strides

SMP_PREFIX = "smp:"
STRIDES = (4, 8, 16, 32)
SCALES = slice(2, 6)  # the entries of an encoder's feature list at STRIDES


def _source(name: str) -> tuple[str, str]:
    """("torchvision" or "smp", the name in that library)."""
    if not isinstance(name, str):
        raise TypeError(f"encoder_name must be a string, got {type(name).__name__}")
    if name.startswith(SMP_PREFIX):
        return "smp", name.removeprefix(SMP_PREFIX)
    return ("torchvision", name) if name in RESNET_NAMES else ("smp", name)


def check_encoder_name(name: str) -> None:
    """Raise ValueError (or ImportError naming the `encoders` extra) unless `name` is an encoder PAANet can build.

    Builds nothing and downloads nothing.
    """
    source, library_name = _source(name)
    if source == "torchvision":
        return
    try:
        import_smp(name)
    except ImportError as exc:
        if name.startswith(SMP_PREFIX):
            raise
        raise ImportError(f"encoder_name {name!r} is not one of torchvision's {', '.join(RESNET_NAMES)}; other "
                          f"encoders come from segmentation_models_pytorch, which is not installed: "
                          f"{INSTALL_HINT}") from exc
    if not is_smp_encoder(library_name):
        raise ValueError(f"encoder_name {name!r} is unknown: not one of torchvision's {', '.join(RESNET_NAMES)}, "
                         "nor a name of segmentation_models_pytorch.encoders.get_encoder_names(), nor "
                         "tu-<a timm model name>")


def build_encoder(name: str, weights: EncoderWeights, in_channels: int) -> nn.Module:
    """The encoder `name` with `weights` for `in_channels`-channel images (see the module's docstring).

    Raises ValueError for an unknown name or one whose feature maps miss one of the strides 4, 8, 16, 32.
    """
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    check_encoder_name(name)
    source, library_name = _source(name)
    if source == "torchvision":
        encoder = ResNetEncoder(library_name, weights, in_channels)
    else:
        try:
            encoder = build_smp_encoder(library_name, weights, in_channels)
        except ValueError as exc:  # smp refuses timm models whose strides are not 2, 4, ..., 32 or 4, ..., 32
            strides = timm_strides(library_name) if library_name.startswith(TIMM_PREFIX) else STRIDES
            if set(STRIDES) <= set(strides):
                raise
            raise _scales_error(name, strides, f" (smp: {exc})") from exc
    check_scales(name, encoder.out_channels)
    return encoder


def check_scales(name: str, out_channels: list[int] | tuple[int, ...]) -> None:
    """Raise ValueError, saying which strides the encoder has, unless smp's feature list has all of STRIDES."""
    if len(out_channels) < SCALES.stop or not all(out_channels[SCALES]):
        raise _scales_error(name, [2 ** i for i, c in enumerate(out_channels) if i > 0 and c > 0])


def _scales_error(name: str, strides: list[int] | tuple[int, ...], detail: str = "") -> ValueError:
    return ValueError(f"encoder_name {name!r} gives feature maps at strides {', '.join(map(str, strides))}; "
                      f"PAANet needs strides 4, 8, 16 and 32{detail}")
