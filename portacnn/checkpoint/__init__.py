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
* **Metadata fields** are checked by the objects they describe, with the rules their constructors use
  (:mod:`portacnn.validation`), so a file can hold nothing the same object built in Python would refuse:
  ``optimizer`` by :func:`portacnn.optim.check_saved` (type, exactly its hyper-parameters, per-parameter step
  counts, parameter groups partitioning the model's parameters, buffers of its own names and shapes);
  ``train_state`` by :func:`portacnn.train_state.check_saved_train_state` (the fields ``fit`` writes, consistent,
  bounded; each callback's state by its class's ``check_state``, a scheduler's by
  :func:`portacnn.optim.lr_scheduler.check_saved_state`); ``extra`` by :meth:`portacnn.recipe.Recipe.check_stored`
  (free-form JSON, but the CLI's recipe keys typed and bounded). Nothing read from a checkpoint is ever used as a
  path to open: ``extra["data"]`` only records where a run's data came from.

Every limit of the file format is a constant of :mod:`.limits`: a model beyond one is refused with a message naming
it; raise it (``portacnn.checkpoint.MAX_ACTIVATION_BYTES = ...``) only for a file you trust. The bounds of what
other modules store (``MAX_EPOCHS``, ``MAX_PARAM_GROUPS``...) are theirs, re-exported here to read. :func:`save` runs the same
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
from .file import _digest, read, save  # noqa: F401 (_digest: what tests sign crafted files with)
from .limits import (_MAX_HEADER, DEFAULT_INPUT_SIDE, FORMAT, FORMAT_VERSION, MAX_ACTIVATION_BYTES, MAX_DEPTH,
                     MAX_INPUT_SIDE, MAX_LAYERS, MAX_OPERATIONS, MAX_TENSORS, MAX_WINDOW, CheckpointError)
from .optimizer import optimizer_from_checkpoint

__all__ = ["CheckpointError", "check_architecture", "optimizer_from_checkpoint", "read", "save", "FORMAT",
           "FORMAT_VERSION", "MAX_ACTIVATION_BYTES", "MAX_DEPTH", "MAX_INPUT_SIDE", "MAX_LAYERS", "MAX_OPERATIONS",
           "MAX_TENSORS", "MAX_WINDOW", "DEFAULT_INPUT_SIDE",
           # the limits of what a file holds for other modules, re-exported from their homes (read them here;
           # they are those modules' rules)
           "MAX_EPOCHS", "MAX_BATCH_SIZE", "MAX_CALLBACKS", "MAX_PARAM_GROUPS", "PROTOCOLS", "SCHEDULES",
           "AUGMENTATIONS"]


class _Package(types.ModuleType):
    """Setting a limit on the package (``portacnn.checkpoint.MAX_OPERATIONS = ...``) sets the one the checks read."""

    def __setattr__(self, name, value):
        if name in limits.NAMES:
            setattr(limits, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
