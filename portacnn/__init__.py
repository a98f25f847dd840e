"""portacnn: a small CNN library written once against the Python array-API standard.

The same layers train and run on NumPy (CPU), CuPy (CUDA), PyTorch tensors or ``array_api_strict``,
chosen per model with ``backend=``.
"""

from . import (augment, callbacks, data, explain, export, interop, labels, layers, losses, models, optim, plots, preprocessing,
               training)
from ._version import __version__
from .backend import Backend, BackendUnavailableError, available_backends, get_backend
from .checkpoint import CheckpointError
from .ensemble import Ensemble
from .export import to_onnx
from .image_files import read_images
from .interop import from_torch, to_torch
from .layers import Parameter
from .preprocessing import InputWarning, Preprocessing
from .sequential import Sequential, load

__all__ = [
    "Backend", "BackendUnavailableError", "CheckpointError", "Ensemble", "InputWarning", "load", "Parameter", "Preprocessing",
    "Sequential", "available_backends", "get_backend", "read_images",
    "augment", "callbacks", "data", "explain", "export", "interop", "labels", "layers", "losses", "to_onnx", "to_torch",
    "from_torch", "models", "optim", "plots", "preprocessing", "training", "__version__",
]  # fmt: skip
