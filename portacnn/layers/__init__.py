"""Layers: each file holds one layer's forward and backward math side by side."""

from .base import Layer, Parameter
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .pool import MaxPool2D
from .relu import ReLU

LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, ReLU, Flatten, Dense, Dropout)}

__all__ = ["Layer", "Parameter", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dense", "Dropout", "LAYER_TYPES"]
