"""Checkpoints: safetensors files that rebuild a model (and its training state) on any backend.

A checkpoint holds the parameters and layer buffers (a BatchNorm's running statistics, its
num_batches_tracked count stored as a float64 tensor) under their state-dict keys ("0.weight",
"1.running_mean", ...), optimizer buffers under
"optim.<param index>.<name>", and JSON metadata: the architecture, dtype, seed, portacnn version, the input
image shape when known, and, when saved during training, the optimizer's type and hyper-parameters, the
trainer's position (epoch, step, history, random generator state) and free-form run information
("extra"). safetensors is a flat header plus raw numbers: loading it can never run code, unlike
pickle-based formats.

Files are written atomically: to a temporary file in the same folder, flushed and fsync'ed, then renamed
over the target, so a crash at any moment leaves either the previous complete file or the new one.

Trust nothing
-------------
:func:`load` treats every file as hostile. Each problem is a :class:`CheckpointError` (a ValueError) of
one line naming the file, raised from the header and the stored numbers alone, in well under a second,
before the model, its activations or any other large array exists:

* **Integrity.** Every checkpoint portacnn writes carries a SHA-256 over all tensors and metadata; one
  that does not match is refused. A file *without* one is refused too (a flipped bit in a weight would
  otherwise load unnoticed), unless the caller opts out for a foreign file it trusts:
  ``load(path, allow_unsigned=True)``. The opt-out skips nothing else, and never accepts a wrong checksum.
* **Architecture.** Layer objects are built from it by their own constructors, which check every field (types,
  known fields only, ranges: :mod:`portacnn.validation`), after the JSON alone is checked for ``MAX_LAYERS``
  (nested layers included) and ``MAX_DEPTH``; no array is allocated. Every size a layer names (kernel, dilated
  kernel, stride, padding: :meth:`~portacnn.layers.Layer.window_sizes`) must be at most ``MAX_INPUT_SIDE``, and a
  window at most ``MAX_WINDOW`` cells. Then the layers run on *shapes only* for the input the model takes
  (:mod:`portacnn.layers.plan`): each layer's ``output_shape`` refuses what it cannot take (a window that does not
  fit, channels or features that do not chain, images where flat features belong, Residual branches of different
  shapes), and one image may need at most ``MAX_ACTIVATION_BYTES`` of activations (the input, every layer's
  output, every padded copy and the largest im2col matrix, times the dtype's size) and ``MAX_OPERATIONS``
  multiply-adds and comparisons (each layer's ``cost``). This package names no layer type.
* **The input the model takes** is the ``input_shape`` stored in the metadata (written by :func:`save` when it
  is known: given as ``save(..., input_shape=(C, H, W))``, kept from the file a model was loaded from, or
  (1, 28, 28) for the zoo's networks); else the one :mod:`.architecture` infers from what the layers declare
  (square images whose features fit a Dense layer after a Flatten, the largest up to ``MAX_INPUT_SIDE``: 29x29
  or 31x31 for the zoo's layers; else ``DEFAULT_INPUT_SIDE`` (28) when it fits; a flat vector for a model that
  starts with flat-input layers). :func:`check_architecture` tells which input a model gets and what it costs.
* **Weights** (parameters and layer buffers) must be float, finite, and exactly the keys and shapes the
  architecture implies (compared before anything is built; a num_batches_tracked count a non-negative whole
  number); optimizer buffers must belong to a parameter and have its shape.
* **Metadata fields** follow an explicit schema: ``optimizer`` (type sgd, adam, adamw or rmsprop, exactly
  its hyper-parameters, each of the right type and range, per-parameter step counts, and its parameter
  groups: each group's hyper-parameters and schedule keys, their parameter indices a partition of the
  model's parameters; files without groups load as one group), ``train_state`` (the fields ``fit`` writes,
  non-negative and consistent: ``step <= seen <= step * batch_size``, ``correct <= seen``, history lists of
  finite floats, one per finished epoch, a random generator state numpy accepts, and the callbacks' states:
  bounded JSON, the known callbacks' fields checked one by one) and ``extra`` (free-form JSON, but the keys
  the CLI writes are typed and bounded: ``model`` and ``protocol`` short names, ``epochs`` in
  1..``MAX_EPOCHS``, ``limit`` a non-negative int or null, ``data`` a string or null, and the training
  recipe: ``optimizer``, ``schedule``, ``lr``, ``weight_decay``, ``label_smoothing``, ``val_split``,
  ``early_stopping``, ``augment``). Nothing read from a checkpoint is ever used as a path to open:
  ``extra["data"]`` only records where a run's data came from.

Every limit is a module constant: a model beyond one is refused with a message naming it; raise it
(``portacnn.checkpoint.MAX_ACTIVATION_BYTES = ...``) only for a file you trust. :func:`save` runs the same
checks on what it is about to write and refuses (writing nothing) rather than produce a file that
:func:`load` would refuse, so every checkpoint portacnn writes loads.
"""

from __future__ import annotations

import sys
import types

from . import limits
from ..optim import MAX_PARAM_GROUPS
from ..recipe import AUGMENTATIONS, PROTOCOLS, SCHEDULES
from ..train_state import MAX_BATCH_SIZE, MAX_CALLBACKS, MAX_EPOCHS
from .architecture import check_architecture
from .file import _digest, read, save
from .limits import (_MAX_HEADER, DEFAULT_INPUT_SIDE, FORMAT, FORMAT_VERSION, MAX_ACTIVATION_BYTES, MAX_DEPTH,
                     MAX_INPUT_SIDE, MAX_LAYERS, MAX_OPERATIONS, MAX_TENSORS, MAX_WINDOW, CheckpointError)
from .optimizer import optimizer_from_checkpoint

__all__ = ["CheckpointError", "check_architecture", "optimizer_from_checkpoint", "read", "save", "FORMAT",
           "FORMAT_VERSION", "MAX_ACTIVATION_BYTES", "MAX_DEPTH", "MAX_INPUT_SIDE", "MAX_LAYERS", "MAX_OPERATIONS",
           "MAX_TENSORS", "MAX_WINDOW", "DEFAULT_INPUT_SIDE"]


class _Package(types.ModuleType):
    """Setting a limit on the package (``portacnn.checkpoint.MAX_OPERATIONS = ...``) sets the one the checks read."""

    def __setattr__(self, name, value):
        if name in limits.NAMES:
            setattr(limits, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
