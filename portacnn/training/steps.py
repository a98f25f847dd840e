"""One training step of ``fit`` in one process, and the generator every step's augmentation draws from.

A step's augmentation draws from ``numpy.random.default_rng([seed, epoch, step, AUGMENT_STREAM])``: its own
stream, the same on every backend, after a resume and on every MPI rank (:mod:`.mpi_step`)."""

from __future__ import annotations

import numpy as np

from ..losses import softmax_cross_entropy

#: the last word of the seed of each step's augmentation generator ([seed, epoch, step, AUGMENT_STREAM]), apart
#: from the epoch orders ([seed, epoch]) and the validation split ([seed, 2**32 - 1])
AUGMENT_STREAM = 0x61756720


def augment_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator the augmentation of step ``step`` of epoch ``epoch`` draws from."""
    return np.random.default_rng([seed, epoch, step, AUGMENT_STREAM])


def local_step(model, source, labels, idx, augment, where, label_smoothing):
    """Forward and backward of the rows ``idx`` of ``source`` (an :class:`~portacnn.inputs.Images`), augmented
    first when ``augment`` is given (``where``: the step's (seed, epoch, step)), against the host ``labels``;
    every parameter's gradient is filled. Returns the batch's mean loss, logits and labels on the device."""
    xb = source.rows(idx)
    if augment is not None:
        xb = augment(xb, augment_rng(*where))
    yb = model.backend.asarray(labels[idx])
    logits = model.forward(xb, training=True)
    loss, dlogits = softmax_cross_entropy(logits, yb, label_smoothing=label_smoothing, check=False)
    model.backward(dlogits, input_grad=False)
    return loss, logits, yb
