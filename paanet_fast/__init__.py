"""paanet_fast: PAANet for medical image segmentation with fused C++/CUDA/Triton operators."""
from . import metrics, ops
from .backends import available_backends
from .export import export_onnx  # onnx itself is imported only when it runs
from .losses import PAANetLoss
from .model import PAANet, PAANetOutput

__all__ = ["PAANet", "PAANetOutput", "PAANetLoss", "available_backends", "export_onnx", "metrics", "ops"]
__version__ = "0.2.0"
