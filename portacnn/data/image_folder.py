"""Folders of image files, one subfolder per class (as torchvision's ``ImageFolder`` and Keras'
``image_dataset_from_directory`` read them): :func:`load_image_folder`, :func:`list_images`,
:func:`find_classes`, :func:`image_folder_splits`.

``root/<class>/**/<image>``: the classes are the immediate subfolders of ``root``, sorted by name (Python's
string order); the label of an image is the index of its class in that list. Images are found recursively
below each class folder and taken in the order of their relative POSIX paths. Only files whose suffix
(any case) is in :data:`~portacnn.data.images.IMAGE_SUFFIXES` count; other files are ignored, and so are
hidden files and folders (names starting with ``.``) and files directly in ``root``. Symbolic links to
files are followed, links to folders are not (a link cycle cannot make the listing endless). A class
folder without images is an error naming it, and so are fewer than two classes (one class trains no
classifier).

A ``root`` whose subfolders are a ``train`` folder and a test folder (``test``, else ``val``, else
``validation``), and nothing else, holds exact splits (:func:`image_folder_splits`): each of them is a
class root as above, and the two must have the same class folders. A ``val`` folder beside a ``test``
folder is not read (``fit`` holds out its own validation images from the training split).

Reading is two passes. The first opens each file for its header only (Pillow reads no pixels then):
every side is checked against ``PORTACNN_MAX_IMAGE_SIDE``, the final size is decided (``size=(H, W)``, or
the one size all images share) and the channels (``channels=1`` or ``3``, or 3 when any image has a
colour mode, else 1), and ``N x C x H x W`` bytes plus the int64 labels are checked against
``PORTACNN_MAX_DATA_BYTES``. Only then is one ``uint8`` ``(N, C, H, W)`` array allocated, and the second
pass decodes each image into it by the rules of :mod:`portacnn.data.images` (16-bit scaled, transparency
composited on black, grey repeated to RGB, colour to grey by Pillow's ``convert("L")``, resized with
Pillow's LANCZOS when its size differs). The listing itself stops at ``PORTACNN_MAX_IMAGE_FILES`` files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import limits
from ._checks import _check_limit
from .errors import DataFileNotFoundError, _fail
from .images import IMAGE_SUFFIXES, _check_channels, _chw, _converted, _image_size, _is_colour, _opened, _resized

TEST_FOLDERS = ("test", "val", "validation")
"""The names a test split's folder may have, in order of preference, beside a ``train`` folder."""


def _folder(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise _fail(path, "folder not found", "check the path", cls=DataFileNotFoundError)
    if not p.is_dir():
        raise _fail(path, "is not a folder")
    return p


def _subfolders(folder: Path) -> list[str]:
    """The names of the visible (not hidden) subfolders of ``folder``, sorted."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as e:
        raise _fail(folder, f"cannot list folder ({e.strerror or e})") from e


def find_classes(root) -> list[str]:
    """The class names of an image-class folder: its visible immediate subfolders, sorted by name."""
    return _subfolders(_folder(root))


def image_folder_splits(root) -> dict[str, Path] | None:
    """``{"train": root/train, "test": root/<test folder>}`` when ``root``'s visible subfolders are ``train``
    and at least one of :data:`TEST_FOLDERS` and nothing else (the test folder is the first of those present),
    else None."""
    names = _subfolders(_folder(root))
    tests = [t for t in TEST_FOLDERS if t in names]
    if "train" not in names or not tests or set(names) - {"train", *TEST_FOLDERS}:
        return None
    return {"train": Path(root) / "train", "test": Path(root) / tests[0]}


def _walk(folder: Path, budget: int, where) -> list[str]:
    """Relative POSIX paths of the image files below ``folder``, sorted; more than ``budget`` is a DataError."""
    found, stack = [], [(folder, "")]
    while stack:
        current, prefix = stack.pop()
        try:
            with os.scandir(current) as entries:
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        stack.append((Path(e.path), prefix + e.name + "/"))
                    elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file():
                        found.append(prefix + e.name)
                        if len(found) > budget:
                            _too_many(where)
        except OSError as e:
            raise _fail(current, f"cannot list folder ({e.strerror or e})") from e
    return sorted(found)


def _too_many(where):
    value = limits.MAX_IMAGE_FILES.get()
    raise _fail(where, f"holds more than {value} image files, the limit set by "
                f"{limits.MAX_IMAGE_FILES.env}",
                f"if the folder is right, raise the limit: {limits.MAX_IMAGE_FILES.env}={2 * value}")  # fmt: skip


def list_images(folder) -> list[Path]:
    """Every image file below ``folder`` (recursively; hidden files and folders skipped, links to folders not
    followed), sorted by relative POSIX path: the order in which predictions are made and stated. More than
    ``PORTACNN_MAX_IMAGE_FILES`` files is a DataError, raised while listing."""
    root = _folder(folder)
    return [root / rel for rel in _walk(root, limits.MAX_IMAGE_FILES.get(), folder)]


def _class_files(root: Path, min_classes: int = 2) -> tuple[list[str], list[list[Path]]]:
    """(classes, the image paths of each class) of a class root, checked: ``min_classes``+ classes, none empty."""
    classes = _subfolders(root)
    if len(classes) < min_classes:
        found = f"{len(classes)} class folder" + (f" ({classes[0]!r})" if classes else "s")
        raise _fail(root, f"found {found}; a classifier needs at least 2",
                    "put the images of each class in a subfolder of its own, named for the class")  # fmt: skip
    budget, files = limits.MAX_IMAGE_FILES.get(), []
    for name in classes:
        rel = _walk(root / name, budget - sum(map(len, files)), root)
        if not rel:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise _fail(root / name, f"class folder {name!r} holds no image files ({suffixes})",
                        "add images or remove the folder")  # fmt: skip
        files.append([root / name / r for r in rel])
    return classes, files


def _relative(path: Path, root) -> str:
    """``path`` as a POSIX path below ``root`` (the class folder first), else as it is."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_images(where, paths: list[Path], size, channels) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` of ``paths``: headers first (sides, final size, channels, data limit), then decoded."""
    heads = []
    for p in paths:
        with _opened(p) as im:  # the header only; the side limit is checked there
            heads.append((im.size[1], im.size[0], _is_colour(im)))
    channels = channels or (3 if any(colour for _, _, colour in heads) else 1)
    if size is None:
        first = (heads[0][0], heads[0][1])
        other = next((i for i, (h, w, _) in enumerate(heads) if (h, w) != first), None)
        if other is not None:
            h, w = heads[other][:2]
            named = [_relative(paths[k], where) for k in (0, other)]  # 0.png is in every class: say which
            raise _fail(where, f"images of different sizes: {named[0]} is {first[0]}x{first[1]} (HxW), "
                        f"{named[1]} is {h}x{w}", "pass an image size to resize them all to it: size=(H, W), "
                        "or --image-size H W on the command line")  # fmt: skip
        size = first
    n = len(paths)
    _check_limit(where, limits.MAX_DATA_BYTES, n * (channels * size[0] * size[1] + 8),
                 f"{n} images of {channels}x{size[0]}x{size[1]} and their int64 labels")  # fmt: skip
    images = np.empty((n, channels, *size), dtype=np.uint8)
    for i, p in enumerate(paths):
        with _opened(p) as im:
            pixels = _chw(_resized(_converted(im, channels, p), size))
        if pixels.shape != images.shape[1:]:
            raise _fail(p, "the file changed while it was being read", "do not modify images while portacnn reads "
                        "them")  # fmt: skip
        images[i] = pixels
    return images


def image_folder_files(root, split: str | None = None, *, min_classes: int = 2):
    """``(paths, labels int64 (N,), class_names, folder)`` of an image-class folder (``folder``: the split's own
    folder, which messages name), nothing decoded: the listing
    :func:`load_image_folder` reads (the same classes, order, splits and checks). ``min_classes`` is 2 for
    training (a classifier needs two); 1 lets a model be scored on the images of one of its classes."""
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    root = _folder(root)
    splits = image_folder_splits(root)
    if splits is not None:
        if split is None:
            raise _fail(root, f"holds a train and a test split ({splits['train'].name}/, {splits['test'].name}/)",
                        "read one of them: split='train' or split='test'")  # fmt: skip
        classes = {s: _subfolders(f) for s, f in splits.items()}
        if classes["train"] != classes["test"]:
            only = {s: sorted(set(classes[s]) - set(classes[o])) for s, o in (("train", "test"), ("test", "train"))}
            differ = "; ".join(f"only in {splits[s].name}/: {', '.join(v)}" for s, v in only.items() if v)
            raise _fail(root, f"the train and test splits have different class folders ({differ})",
                        "give both splits the same class folders")  # fmt: skip
        root = splits[split]
    classes, files = _class_files(root, min_classes)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(group) for group in files])
    return [p for group in files for p in group], labels, classes, root


def load_image_folder(root, split: str | None = None, *, size=None, channels: int | None = None):
    """An image-class folder as ``(images uint8 (N, C, H, W), labels int64 (N,), class_names)``.

    ``root`` holds one subfolder per class (see the module docstring), or ``train`` and ``test`` (or ``val``)
    folders that do: then ``split`` (``"train"`` or ``"test"``) picks one, and both must have the same
    classes; a plain class root ignores ``split``. ``size`` ``(H, W)`` resizes every image to it (Pillow's
    LANCZOS); None requires all images to share one size. ``channels`` 1 or 3 converts every image to it;
    None takes 3 when any image has a colour mode, else 1. The images come in class order, each class's
    sorted by relative path. Raises :class:`DataError`.
    """
    _check_channels(channels)
    size = _image_size(size)
    paths, labels, classes, where = image_folder_files(root, split)
    return _read_images(where, paths, size, channels), labels, classes
