"""Layers: each file holds one layer's forward and backward math side by side."""

from .avgpool import AvgPool2D
from .base import Layer, Parameter
from .batchnorm import BatchNorm1D, BatchNorm2D
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .global_avgpool import GlobalAvgPool2D
from .leaky_relu import LeakyReLU
from .maxpool import MaxPool2D
from .relu import ReLU
from .residual import Residual
from .sigmoid import Sigmoid
from .tanh import Tanh

LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, ReLU, Flatten, Dense, Dropout, LeakyReLU, Sigmoid,
                                             Tanh, AvgPool2D, GlobalAvgPool2D, BatchNorm2D, BatchNorm1D, Residual)}

__all__ = ["Layer", "Parameter", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dense", "Dropout", "LeakyReLU",
           "Sigmoid", "Tanh", "AvgPool2D", "GlobalAvgPool2D", "BatchNorm2D", "BatchNorm1D", "Residual",
           "LAYER_TYPES"]
