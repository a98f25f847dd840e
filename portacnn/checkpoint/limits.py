"""The checkpoint format's name and version, the limits a file must keep to, and the error a refusal raises.

Every limit is a module constant: a file beyond one is refused with a message naming it. Raise one only for a
file you trust, through the package (``portacnn.checkpoint.MAX_ACTIVATION_BYTES = ...``), which sets it here.
"""

from __future__ import annotations

FORMAT = "portacnn-checkpoint"
FORMAT_VERSION = "1"

#: a real header is a few KB (tensor offsets, architecture, per-epoch history); 16 MiB holds MAX_EPOCHS epochs
_MAX_HEADER = 16 * 1024 * 1024
#: layers in an architecture: far deeper than anything this CPU-first library trains
MAX_LAYERS = 256
#: how deep layers may nest inside others (Residual blocks): each level is one recursion of every check
MAX_DEPTH = 8
#: tensors in a file, for MAX_LAYERS layers of the most: a BatchNorm's 2 parameters with at most 3 optimizer
#: buffers each, and its 3 buffers
MAX_TENSORS = 11 * MAX_LAYERS
#: largest image side (and kernel size, stride, padding) a checkpoint may imply; the zoo reads 28x28
MAX_INPUT_SIDE = 1024
#: image side assumed for a model that neither stores its input shape nor implies one through a Dense layer
DEFAULT_INPUT_SIDE = 28
#: cells of one convolution or pooling window (kh * kw): each is a pass over the batch (~3 us of Python alone)
MAX_WINDOW = 128 * 128
#: activation memory of ONE image (a batch of N needs N times this); VGG-16 at 224x224 needs ~0.55 GiB in float64
MAX_ACTIVATION_BYTES = 1 << 30
#: multiply-adds and comparisons of one image's forward pass; VGG-16 at 224x224 is 1.5e10
MAX_OPERATIONS = 2 * 10**10
#: characters of a short string in the metadata (a version)
_MAX_NAME = 64

#: the names above that ``portacnn.checkpoint.<NAME> = value`` sets here
NAMES = ("MAX_LAYERS", "MAX_DEPTH", "MAX_TENSORS", "MAX_INPUT_SIDE", "DEFAULT_INPUT_SIDE", "MAX_WINDOW",
         "MAX_ACTIVATION_BYTES", "MAX_OPERATIONS", "_MAX_HEADER")


class CheckpointError(ValueError):
    """A file that is not a usable portacnn checkpoint; the message names the file and the problem."""


class Bad(Exception):
    """A refusal inside the reader, before the file's name is added (:class:`CheckpointError` carries it out)."""


def checked(what: str, check, *args):
    """``check(*args)``, any ValueError or :class:`Bad` it raises turned into a :class:`Bad` prefixed by ``what``
    ("unusable optimizer description in the checkpoint metadata: ...")."""
    try:
        return check(*args)
    except (ValueError, Bad) as e:
        raise Bad(f"{what}: {e}") from None
