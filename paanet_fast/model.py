"""PAANet (design section 1): encoder, then a decoder of lateral reductions, alternating PAAD blocks and a
top-down path, then the segmentation head; named as in segmentation_models_pytorch."""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops
from .amp import autocast_dtype
from .backends import check_name, resolve
from .encoder import SCALES, build_encoder
from .encoder_weights import EncoderWeights

WIDTHS = (32, 64, 128, 256)  # channels of the four scales after the lateral reductions
STRIDE = 32  # the coarsest encoder stride: inputs are padded to a multiple of it


class PAANetOutput(NamedTuple):
    """Everything the loss supervises, all at the input's (H, W).

    logits: (B, classes, H, W); aux_logits: 3 x (B, classes, H, W) from decoder levels 2, 3, 4;
    gam_logits: num_blocks * num_layers x (B, 1, H, W), block-major.
    """

    logits: torch.Tensor
    aux_logits: list[torch.Tensor]
    gam_logits: list[torch.Tensor]


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PAADBlock(nn.Module):
    """Progressive alternating attention dense block (paper eqs. 1-3) over all scales at once."""

    def __init__(self, widths: tuple[int, ...], num_layers: int, growth: int, reverse: bool) -> None:
        super().__init__()
        self.reverse = reverse
        self.convs = nn.ModuleList(
            nn.ModuleList(conv_bn(w + c * growth, growth, 3) for w in widths) for c in range(num_layers))
        # Only weight and bias are used: the GAM convolution runs inside ops.mini_decoder.
        self.gam_convs = nn.ModuleList(nn.Conv2d(len(widths) * growth, 1, 3, padding=1) for _ in range(num_layers))
        self.fuse = nn.ModuleList(conv_bn(w + num_layers * growth, w, 3, relu=False) for w in widths)
        self.backend = "auto"

    def forward(self, inputs: list[torch.Tensor], size: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        history = [[p] for p in inputs]  # per scale: P^0, ..., P^c
        gam_logits = []
        for convs, gam_conv in zip(self.convs, self.gam_convs):
            features = [conv(torch.cat(h[::-1], dim=1)) for conv, h in zip(convs, history)]
            logits, gam = ops.mini_decoder(features, gam_conv.weight, gam_conv.bias, size, backend=self.backend)
            attended = ops.gam_multiply(features, gam, self.reverse, backend=self.backend)
            for h, p in zip(history, attended):
                h.append(p)
            gam_logits.append(logits)
        outputs = [h[0] + fuse(torch.cat(h[::-1], dim=1)) for fuse, h in zip(self.fuse, history)]
        return outputs, gam_logits


class TopDown(nn.Module):
    """D_4 = out_4; D_v = ConvBNReLU(concat(Up(D_{v+1}), out_v)), Up a 4x4 stride-2 transposed conv."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[v + 1], widths[v], 4, stride=2, padding=1)
                                 for v in range(len(widths) - 1))
        self.fuse = nn.ModuleList(conv_bn(2 * widths[v], widths[v], 3) for v in range(len(widths) - 1))

    def forward(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        decoded = [outs[-1]]
        for v in range(len(outs) - 2, -1, -1):
            decoded.insert(0, self.fuse[v](torch.cat([self.ups[v](decoded[0]), outs[v]], dim=1)))
        return decoded


class PAANetDecoder(nn.Module):
    """Everything between the encoder and the heads: lateral reductions, PAAD blocks, top-down path.

    forward(features: the encoder's maps at strides 4, 8, 16, 32, size: the padded input's (H, W))
    returns the decoded maps [D_1, ..., D_4] (widths WIDTHS, strides 4..32) and the GAM logits,
    num_blocks * num_layers x (B, 1, H, W), block-major.
    """

    out_channels = WIDTHS[0]  # of D_1, what the segmentation head reads

    def __init__(self, encoder_channels: tuple[int, ...], num_blocks: int, num_layers: int, growth: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(c, w, 1) for c, w in zip(encoder_channels, WIDTHS))
        self.blocks = nn.ModuleList(PAADBlock(WIDTHS, num_layers, growth, reverse=(b % 2 == 0))
                                    for b in range(1, num_blocks + 1))
        self.top_down = TopDown(WIDTHS)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = [lat(e) for lat, e in zip(self.lateral, features)]
        gam_logits = []
        for block in self.blocks:
            feats, block_gams = block(feats, size)
            gam_logits.extend(block_gams)
        return self.top_down(feats), gam_logits


def check_config_keys(config: Mapping[str, Any], what: str) -> None:
    """Raise ValueError naming `what` when `config` has keys that are not PAANet's constructor arguments
    (encoder_weights aside: a config describes the network, not where its weights come from)."""
    keys = set(inspect.signature(PAANet).parameters) - {"encoder_weights"}
    if not set(config) <= keys:
        raise ValueError(f"{what} has unknown keys {sorted(set(config) - keys)}; a PAANet config has {sorted(keys)}")


class PAANet(nn.Module):
    """Progressive alternating attention network (Srivastava et al., 2021).

    The constructor follows segmentation_models_pytorch (smp), and so do the parts:
    `encoder` (its forward returns smp's feature list, entry i at stride 2**i), `decoder` (a
    PAANetDecoder: lateral reductions, PAAD blocks, top-down path) and `segmentation_head` (1x1
    conv from the decoder's `out_channels` at stride 4 to the class logits, which forward resizes
    to the input's size); `aux_heads` give the deep-supervision logits. Freezing `encoder` or
    assigning another `segmentation_head` works as in smp.

    Args:
        encoder_name: "resnet18", "resnet34", "resnet50" or "resnet101" (torchvision's), or any
            encoder of smp ("efficientnet-b0", "mit_b2", "tu-convnext_tiny", ...; needs the
            `encoders` extra); "smp:resnet50" is smp's resnet50. See paanet_fast.encoder.
        encoder_weights: "imagenet" (downloaded once, cached), another weights name smp lists for
            the encoder, a path to a state-dict file of the encoder, or None (random weights).
        in_channels: channels of the input images.
        classes: output channels (one logit map per class, sigmoid activation).
        num_blocks: PAAD blocks; block b (1-based) uses reverse attention when b is even.
        num_layers: convolution layers (and GAMs) per PAAD block.
        growth: channels each PAAD layer adds (k).
        backend: operator backend, "auto", "reference", "portable", "cpp", "cuda" or "triton"; settable later.

    forward(x: (B, in_channels, H, W), return_aux=False) -> logits (B, classes, H, W), or a
    PAANetOutput with the deep-supervision and GAM logits when return_aux is True. Any H, W works:
    the input is zero-padded to a multiple of 32 and every output cropped back. predict(x) gives
    the logits in eval mode without autograd, as smp's predict, and leaves the mode as it was.

    `config` holds the constructor's arguments but the weights (JSON-serialisable);
    PAANet.from_config(config) builds the same network again. save_pretrained(folder) and
    PAANet.from_pretrained(folder, Hub id or run checkpoint) share a trained model as smp does.
    """

    def __init__(self, encoder_name: str = "resnet50", encoder_weights: EncoderWeights = "imagenet",
                 in_channels: int = 3, classes: int = 1, num_blocks: int = 2, num_layers: int = 3,
                 growth: int = 32, backend: str = "auto") -> None:
        super().__init__()
        for arg, value in (("classes", classes), ("num_blocks", num_blocks), ("num_layers", num_layers),
                           ("growth", growth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        self.encoder = build_encoder(encoder_name, encoder_weights, in_channels)
        self.decoder = PAANetDecoder(tuple(self.encoder.out_channels[SCALES]), num_blocks, num_layers, growth)
        self.segmentation_head = nn.Conv2d(self.decoder.out_channels, classes, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(w, classes, 1) for w in WIDTHS[1:])
        self.config = dict(encoder_name=encoder_name, in_channels=in_channels, classes=classes,
                           num_blocks=num_blocks, num_layers=num_layers, growth=growth, backend=backend)
        self.backend = backend

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PAANet":
        """The network `config` (a PAANet's `config`) describes, with random weights: nothing is downloaded."""
        check_config_keys(config, "config")
        return cls(**config, encoder_weights=None)

    def save_pretrained(self, save_directory: str | os.PathLike, *, dataset: str | None = None,
                        metrics: Mapping[str, Any] | None = None) -> Path:
        """Write the model into the folder `save_directory` as smp's save_pretrained does; returns the folder.

        The folder holds config.json (the constructor's arguments, encoder_weights null, backend
        "auto"), model.safetensors (the weights; no pickle) and README.md, a model card that names
        `dataset` and lists `metrics` ({name: value}) when given. Upload it to the Hugging Face
        Hub with huggingface_hub (`hf upload OWNER/NAME FOLDER`) to share it there.
        """
        from .pretrained import save_pretrained

        return save_pretrained(self, save_directory, dataset=dataset, metrics=metrics)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, backend: str = "auto",
                        map_location: torch.device | str = "cpu", revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None) -> "PAANet":
        """The PAANet saved in a save_pretrained folder, a Hugging Face Hub repository or a run's checkpoint.

        Args:
            name_or_path: a folder written by save_pretrained (or `paanet-fast export --format
                pretrained`), a best.pt or last.pt of a run (loaded with weights_only=True), or a Hub
                model id "owner/name" (fetched through huggingface_hub into its cache; with
                HF_HUB_OFFLINE=1 from the cache only). A local path is never looked up on the Hub.
            backend: the operator backend of the loaded model (any; the weights are the same).
            map_location: the device the model is moved to (the files are read on the CPU).
            revision, cache_dir, token: huggingface_hub's, for a Hub id: a branch, tag or commit,
                the cache folder, the access token.

        Returns the model in eval mode. Encoder weights are never downloaded: the saved weights
        are the whole model's.
        """
        from .checkpoint import load_checkpoint, model_from_checkpoint
        from .pretrained import local_source

        source = local_source(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
        return model_from_checkpoint(load_checkpoint(source), backend).to(map_location)

    @property
    def backend(self) -> str:
        """The operator backend of every PAAD block; assign to switch (the state dict is unaffected)."""
        return self.config["backend"]

    @backend.setter
    def backend(self, name: str) -> None:
        self.config["backend"] = check_name(name)
        for block in self.decoder.blocks:
            block.backend = self.config["backend"]

    def resolved_backend(self, device: torch.device | str | None = None) -> str:
        """The backend that runs for inputs on `device` (default: the parameters' device): what "auto" picks
        there ("cpp" for CPU tensors, ...), or the name set; raises as a forward would where it cannot run."""
        device = next(self.parameters()).device if device is None else torch.device(device)
        return resolve(self.backend, device).name

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"PAANet expects a tensor, got {type(x).__name__}")
        expected = self.config["in_channels"]
        if x.dim() != 4:
            raise ValueError(f"PAANet expects a 4-D input (B, {expected}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != expected:
            raise ValueError(f"PAANet expects {expected} input channels (B, {expected}, H, W), "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"PAANet expects a floating-point input, got {x.dtype}")
        self._check_input_matches_parameters(x)

    def _check_input_matches_parameters(self, x: torch.Tensor) -> None:
        first = next(self.parameters())
        if x.device != first.device:
            raise ValueError(f"PAANet: the input x is on {x.device} but the model's parameters are on {first.device}")
        model, autocast = first.dtype, autocast_dtype(x.device.type)
        if autocast is None:
            if x.dtype != model:
                raise ValueError(f"PAANet: the input x has dtype {x.dtype} but the model's parameters are {model}; "
                                 f"convert one of them (x.to({model}) or model.to({x.dtype}))")
        elif torch.float64 in (x.dtype, model):
            if x.dtype != model:  # autocast leaves float64 tensors as they are, so nothing reconciles them
                raise ValueError(f"PAANet: the input x has dtype {x.dtype} but the model's parameters are {model}, "
                                 f"and autocast to {autocast} leaves float64 as it is; convert one of them")
        elif model not in (torch.float32, autocast):  # batch norm under autocast takes only these
            raise ValueError(f"PAANet: under autocast to {autocast} the model's parameters must be torch.float32 or "
                             f"{autocast}, but they are {model}")

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor | PAANetOutput:
        self._check_input(x)
        height, width = x.shape[-2:]
        # Written for export with symbolic H, W: a floor division of non-negative numbers (the ONNX export
        # got -(-H // 32) wrong), and a crop by negative padding (slicing makes torch.export ask for a
        # proof that H <= padded H, which it cannot find).
        padded = ((height + STRIDE - 1) // STRIDE * STRIDE, (width + STRIDE - 1) // STRIDE * STRIDE)
        x = F.pad(x, (0, padded[1] - width, 0, padded[0] - height))
        decoded, gam_logits = self.decoder(self.encoder(x)[SCALES], padded)

        def full_size(t: torch.Tensor) -> torch.Tensor:
            if tuple(t.shape[-2:]) != padded:
                t = F.interpolate(t, size=padded, mode="bilinear", align_corners=False)
            return F.pad(t, (0, width - padded[1], 0, height - padded[0]))

        logits = full_size(self.segmentation_head(decoded[0]))
        if not return_aux:
            return logits
        aux = [full_size(head(d)) for head, d in zip(self.aux_heads, decoded[1:])]
        return PAANetOutput(logits, aux, [full_size(z) for z in gam_logits])

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes, H, W) for x (B, in_channels, H, W) in eval mode without autograd.

        Unlike smp's predict, which leaves the model in eval mode, it restores the mode the model
        was in (a training loop that calls it goes on training with dropout and batch statistics).
        """
        was_training = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was_training)

