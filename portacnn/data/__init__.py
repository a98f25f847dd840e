"""Dataset loading for portacnn: MNIST-style IDX files, Kaggle CSV files, ``.npz`` archives (Keras-style
included), CIFAR-10/100 binary files, folders of image files (one subfolder per class), single images.

Pure NumPy (and Pillow for image files); nothing here depends on the array backends, and nothing in this
package imports the rest of portacnn. Every loader returns host arrays: ``uint8`` images, 0 = background,
and ``int64`` labels of shape ``(N,)`` or ``None`` when the source has no labels. The canonical raw form of
the images (:mod:`~portacnn.data.layout`): greyscale readers (IDX, CSV, greyscale ``.npz``) return
``(N, H, W)``; anything with channels is channels-first ``(N, C, H, W)`` with ``C`` 1 or 3 (CIFAR, colour
``.npz``, image folders; :func:`to_channels_first` turns a channels-last ``(N, H, W, C)`` array into it).
:func:`preprocess` turns any of these into the ``float32`` ``(N, C, H, W)`` batches in ``[0, 1]`` that the
models take.

Every problem with an input file raises :class:`DataError`, a subclass of :class:`ValueError`, whose
one-line message names the file, the problem and, where it helps, what to do about it. A missing file
raises :class:`DataFileNotFoundError`, which is both a :class:`DataError` and a :class:`FileNotFoundError`.

:func:`load_any` picks the IDX, CSV or NPZ reader from a file's content (never its name).
:func:`open_idx` and :func:`open_any` are the same readers except that the images of a plain IDX file
stay on disk (:class:`IdxImages`, read when sliced), for inputs larger than memory should hold.
:func:`load_split` recognises a ``--data`` folder by its content (IDX files, CIFAR binary files, class
subfolders of images) and says whether it holds exact train/test splits.

Files are read in chunks of bytes and never whole: a reader checks the sizes a file declares (IDX
dimensions, ``.npy`` shapes, CSV line lengths, CIFAR file sizes, image headers) against the limits of
:mod:`portacnn.data.limits` before it allocates, and stops decompressing at the declared size, so memory
stays near the size of the result and a file that declares or inflates to more than a limit is a one-line
:class:`DataError` naming the limit and the environment variable that raises it
(``PORTACNN_MAX_DATA_BYTES``, ``PORTACNN_MAX_IMAGE_SIDE``, ``PORTACNN_MAX_CSV_LINE_BYTES``,
``PORTACNN_MAX_IMAGE_FILES``).

One idea per module; this package re-exports their public names:

``errors``         :class:`DataError`, :class:`DataFileNotFoundError` and the one-line message format
``limits``         the input-size limits and their environment variables
``_io``            bounded chunked reading; gzip recognised by content
``_checks``        checks the readers share (``num_classes``, label range, declared sizes vs the limits)
``layout``         where the channels are: :func:`to_channels_first`
``idx``            IDX files: :func:`load_idx`, :func:`open_idx`, :class:`IdxImages`
``kaggle_csv``     Kaggle-layout CSV files: :func:`load_csv`
``npz``            ``.npz`` archives without pickle, Keras-style splits included: :func:`load_npz`
``cifar``          CIFAR-10/100 binary files and folders: :func:`load_cifar`
``images``         image files via Pillow: :func:`open_image`, :func:`read_image`, :func:`resize_images`,
                   :data:`IMAGE_SUFFIXES`
``image_folder``   one subfolder of images per class: :func:`load_image_folder`, :func:`list_images`,
                   :func:`image_folder_files`
``folders``        folders of IDX files: :func:`find_idx_pair`, :func:`load_folder_pair`
``sniff``          any data file by content: :func:`load_any`, :func:`open_any`, :func:`data_kind`
``catalogue``      the embedded Kannada-MNIST: :func:`load_kannada_mnist`, :func:`tutorial_split`
``preprocessing``  :func:`preprocess`
``splits``         the command line's train/test split policy: :class:`Split`, :func:`load_split`,
                   :func:`train_test`
"""

from __future__ import annotations

from . import limits
from .catalogue import EMBEDDED_DATA_DIR, embedded_data_dir, load_kannada_mnist, tutorial_split
from .cifar import load_cifar
from .errors import DataError, DataFileNotFoundError
from .folders import find_idx_pair, load_folder_pair
from .idx import IdxImages, load_idx, open_idx
from .image_folder import image_folder_files, list_images, load_image_folder
from .images import IMAGE_SUFFIXES, open_image, read_image, resize_images
from .kaggle_csv import load_csv
from .layout import to_channels_first
from .npz import load_npz
from .preprocessing import preprocess
from .sniff import data_kind, load_any, open_any
from .splits import Split, load_split, train_test

__all__ = [
    "DataError",
    "DataFileNotFoundError",
    "EMBEDDED_DATA_DIR",
    "IMAGE_SUFFIXES",
    "IdxImages",
    "data_kind",
    "Split",
    "embedded_data_dir",
    "find_idx_pair",
    "limits",
    "list_images",
    "load_any",
    "load_cifar",
    "load_csv",
    "load_folder_pair",
    "load_idx",
    "image_folder_files",
    "load_image_folder",
    "load_kannada_mnist",
    "load_npz",
    "load_split",
    "open_any",
    "open_idx",
    "open_image",
    "preprocess",
    "read_image",
    "resize_images",
    "to_channels_first",
    "train_test",
    "tutorial_split",
]
