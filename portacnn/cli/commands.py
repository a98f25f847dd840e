"""``portacnn evaluate``, ``predict``, ``export`` and ``info``."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import warnings
from pathlib import Path

import array_api_compat
import numpy as np

from .. import data, kernels
from .._atomic import atomic_write
from ..image_files import read_images
from ..labels import class_label
from ..preprocessing import BORDER_SAMPLE, InputWarning
from .._version import __version__
from ..backend import KNOWN_BACKENDS, get_backend, unusable_reason
from ..backend.registry import jax_float64_enabled
from ..ensemble import Ensemble
from ..sequential import load
from .common import UsageError, _check_fits, _chunks, _emit_json, _input_file, _output_file, _say


def _load_models(args, paths):
    """The checkpoints ``paths`` as one model, or as an :class:`Ensemble` of several."""
    models = []
    for path in paths:
        _input_file(path, "checkpoint file")
        model = load(path, backend=args.backend, allow_unsigned=args.allow_unsigned)
        model.workers = args.workers
        models.append(model)
    if len(models) == 1:
        return models[0]
    try:
        return Ensemble(models)
    except ValueError as e:  # name the odd member's file, not every file (forty paths make no readable line)
        member = getattr(e, "member", None)
        where = paths[member] if member is not None else f"the {len(paths)} models"
        raise UsageError(f"{where}: cannot form an ensemble with the other models: {e}") from None


def _members(model):
    return model.models if isinstance(model, Ensemble) else [model]


def _labels_for(model, split, source) -> np.ndarray:
    """The split's labels as the model's class ids: a folder's (or CIFAR's) classes are matched to the model's by
    name; without names on both sides, the ids are taken as they are."""
    y, theirs, ours = split.labels, split.class_names, model.class_names
    if theirs is None or ours is None or list(theirs) == list(ours):
        if theirs is not None and ours is None:
            print(f"portacnn: note: the model has no class names; the classes of {source} are taken in their order "
                  f"({', '.join(theirs[:5])}{', ...' if len(theirs) > 5 else ''})", file=sys.stderr)
        return y
    unknown = [name for name in theirs if name not in ours]
    if unknown:
        raise UsageError(f"{source}: class {unknown[0]!r} is not one of the model's classes "
                         f"({', '.join(ours[:8])}{', ...' if len(ours) > 8 else ''})")
    return np.array([ours.index(name) for name in theirs], dtype=np.int64)[y]


def _image_folder(args, model) -> data.Split:
    """The images of a class folder (its ``--split`` when it has train/ and test/) read for the model as
    ``predict`` reads image files (:func:`portacnn.read_images`: converted, resized or refused out loud, with
    ``--resize`` and ``--invert``); one class is enough to be scored."""
    paths, labels, classes, _ = data.image_folder_files(args.data, args.split, min_classes=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        images = read_images(paths, model, resize=args.resize, invert=args.invert)
    _warn(caught, set())
    return data.Split(images, labels, True, classes)


def cmd_evaluate(args) -> int:
    model = _load_models(args, args.model)
    if data.splits.is_image_folder(args.data):
        split = _image_folder(args, model)  # read as predict reads image files: every change said
    else:  # other data are not resized: _check_fits says what does not fit the model
        split = data.load_split(args.data, args.split)
    x = split.images
    source = args.data or f"embedded Kannada-MNIST {args.split}"
    if split.labels is None:
        raise UsageError(f"{args.data}: holds no labels, so accuracy cannot be computed (use 'portacnn predict')")
    y = _labels_for(model, split, source)
    for member, path in zip(_members(model), args.model):
        _check_fits(member, x, source, path)
    classes = model.num_classes()
    if classes is not None and y.size and not 0 <= int(y.min()) <= int(y.max()) < classes:
        raise UsageError(f"{source}: its labels run from {int(y.min())} to {int(y.max())}, but the model has {classes} "
                         f"classes (0..{classes - 1}); evaluate it on data of its classes")
    loss_sum, correct, n = 0.0, 0, int(x.shape[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        said = set()
        for lo, hi in _chunks(x, args.batch_size):  # raw chunks, read by the model: memory does not grow with N
            r = model.evaluate(np.asarray(x[lo:hi]), y[lo:hi], batch_size=args.batch_size)
            _warn(caught, said)
            loss_sum += r["loss"] * r["n"]
            correct += round(r["accuracy"] * r["n"])
    result = {"accuracy": correct / n, "loss": loss_sum / n, "n": n, "models": len(_members(model))}
    what = "" if len(args.model) == 1 else f" (ensemble of {len(args.model)} models)"
    _say(args, f"accuracy {result['accuracy'] * 100:.2f} %  loss {result['loss']:.4f}  on {n} images ({source})"
               + what)
    if args.json:
        _emit_json(result)
    return 0


def _data_file(path):
    """(raw images, ids) of a data file: a Kaggle test CSV's id column, else None (rows are numbered). A Keras
    ``.npz`` gives its test images; a CIFAR ``.bin`` file all of its images."""
    if data.data_kind(path) == "csv":
        images, _, ids = data.load_csv(path, num_classes=None, return_ids=True)
        return images, ids
    return data.load_split(str(path), "test").images, None


def _inputs(args, model):
    """[(source, names, ids, raw uint8 images, invert)] in the order given: each run of image files (a folder's
    images, every one inside it in sorted path order) read for the model as one group
    (:func:`portacnn.read_images`, inverted there with ``--invert``), each data file as it is (a plain IDX file read
    lazily; ``--invert`` applied to each chunk as it is read, see :func:`_rows`). ``names`` is what the output calls
    each image (its path, or ``FILE[row]``); ``ids`` what ``--csv`` does (its path, a Kaggle test CSV's id, or the
    row number)."""
    groups, files = [], []

    def flush():
        if files:
            names = [str(f) for f in files]
            groups.append((names[0] if len(names) == 1 else f"{len(names)} image files", names, names,
                           read_images(files, model, resize=args.resize, invert=args.invert), False))
            files.clear()

    for text in args.inputs:
        if Path(text).is_dir():
            found = data.list_images(text)
            if not found:
                raise UsageError(f"{text}: a folder without image files ({', '.join(sorted(data.IMAGE_SUFFIXES))})")
            files.extend(found)
            continue
        p = _input_file(text, "image or data file")
        if p.suffix.lower() in data.IMAGE_SUFFIXES:
            files.append(p)
            continue
        flush()
        images, ids = _data_file(p)
        names = [f"{text}[{k}]" for k in range(len(images))]
        ids = [str(i) for i in (ids if ids is not None else range(len(images)))]
        groups.append((text, names, ids, images, args.invert))
    flush()
    return groups


def _rows(images, lo: int, hi: int, invert: bool) -> np.ndarray:
    """Rows ``lo:hi`` of a group's images as a host array; raw ones of a data file turned dark-on-light to
    light-on-dark (255 - v) with ``invert`` (image files are inverted as they are read)."""
    rows = np.asarray(images[lo:hi])
    if invert:
        if rows.dtype.kind not in "iu":
            raise UsageError("--invert needs raw images (integers 0..255); these hold floats")
        rows = 255 - rows
    return rows


def _warn(caught, said) -> None:
    """Print each new warning of ``caught`` once, as one line on stderr."""
    for w in caught:
        text = str(w.message)
        if text not in said:
            said.add(text)
            print(f"portacnn: warning: {text}", file=sys.stderr, flush=True)
    caught.clear()


def _not_an_input(target: Path, models, inputs) -> None:
    """A UsageError when writing ``target`` would replace a checkpoint or an input it reads: one named on the
    command line, or an image file inside a folder given."""
    for text in [*models, *inputs]:
        given = Path(text)
        same = target.resolve() == given.resolve()
        inside = (given.is_dir() and target.suffix.lower() in data.IMAGE_SUFFIXES
                  and given.resolve() in target.resolve().parents)
        if same or inside:
            what = "checkpoint" if text in models else "input"
            raise UsageError(f"{target}: --csv would overwrite {'an image in ' if inside else ''}the {what} {text}; "
                             "give another name")


def cmd_predict(args) -> int:
    paths = [args.model]
    while args.inputs and args.inputs[0].lower().endswith(".safetensors"):  # never an input: more models
        paths.append(args.inputs.pop(0))
    if not args.inputs:
        raise UsageError("predict needs at least one input file after the model checkpoints")
    csv_path = _output_file(args.csv) if args.csv else None  # checked before any work
    if csv_path is not None:
        _not_an_input(csv_path, paths, args.inputs)
    model = _load_models(args, paths)
    names_of = model.class_names
    said, rows = set(), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        groups = _inputs(args, model)
        prep = model.preprocessing
        for source, names, _, images, invert in groups:  # each odd image named by its file or row
            if prep is not None and np.dtype(images.dtype).kind in "iu":
                head = _rows(images, 0, BORDER_SAMPLE, invert)  # a data file may be read lazily: its first rows only
                caught.extend(warnings.WarningMessage(text, InputWarning, "", 0)
                              for text in prep.questions(head, names[:BORDER_SAMPLE], were_inverted=args.invert))
        _warn(caught, said)
        warnings.simplefilter("ignore", InputWarning)  # said above, with names: not again, by row, when predicted
        for source, _, _, images, _ in groups:
            for member, path in zip(_members(model), paths):
                _check_fits(member, images, source, path)
        out = sys.stdout
        if args.json:  # streamed, so a million predictions never sit in memory as Python objects
            out.write('{"predictions": [')
        first = True
        for source, names, ids, images, invert in groups:
            for lo, hi in _chunks(images, args.batch_size):
                proba = model.predict_proba(_rows(images, lo, hi, invert), batch_size=args.batch_size)
                _warn(caught, said)
                classes = proba.argmax(axis=1)
                for k, c in enumerate(classes):
                    name, p, label = names[lo + k], float(proba[k, c]), class_label(names_of, c)
                    if csv_path is not None:
                        rows.append((ids[lo + k], label))
                    if args.json:
                        entry = {"input": name, "class": int(c), "probability": p}
                        entry.update({"label": label} if names_of is not None else {})
                        out.write(("" if first else ", ") + json.dumps(entry, sort_keys=True))
                        first = False
                    else:
                        out.write(f"{name}: {label} ({p:.3f})\n")
        if args.json:
            out.write("]}\n")
        out.flush()
    if csv_path is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("id", "label"))
        writer.writerows(rows)
        atomic_write(csv_path, buffer.getvalue().encode())
        print(f"portacnn: wrote {len(rows)} predictions to {csv_path}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from ..export import export_checkpoint

    _input_file(args.model, "checkpoint file")
    _output_file(args.output)  # before loading and converting: a missing folder named, not a temporary file
    try:
        path = export_checkpoint(args.model, args.output, opset=args.opset, softmax=args.softmax,
                                 allow_unsigned=args.allow_unsigned)
    except ImportError as e:  # onnx not installed: say how to get it
        raise UsageError(str(e)) from None
    _say(args, f"wrote {path} (ONNX opset {args.opset}, output {'probabilities' if args.softmax else 'logits'})")
    if args.json:
        _emit_json({"onnx": str(path), "opset": args.opset, "output": "probabilities" if args.softmax else "logits"})
    return 0


def cmd_info(args) -> int:
    backends = {}
    for name in KNOWN_BACKENDS:
        reason = unusable_reason(name)
        entry = {"available": reason is None}
        if reason:
            entry["reason"] = reason
        else:
            be = get_backend(name)
            entry["device"] = str(be.device)
            if name == "cupy":
                import cupy

                props = cupy.cuda.runtime.getDeviceProperties(be.device.id)
                entry["device_name"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            if name == "jax":
                import jax

                entry["version"] = jax.__version__
                entry["float64"] = jax_float64_enabled()
        backends[name] = entry
    info = {"portacnn": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
            "array_api_compat": array_api_compat.__version__, "backends": backends,
            "default_backend": os.environ.get("PORTACNN_BACKEND") or "numpy", "cpu_kernels": kernels.status(),
            "deploy_and_scale_out": _extras(backends)}
    if args.json:
        _emit_json(info)
        return 0
    print(f"portacnn {info['portacnn']} (python {info['python']}, numpy {info['numpy']}, "
          f"array-api-compat {info['array_api_compat']})")
    print(f"default backend: {info['default_backend']}")
    print(f"numpy kernels: {info['cpu_kernels']}")
    for name, e in backends.items():
        where = e.get("device_name") or e.get("device")
        note = ""
        if e.get("float64") is False:
            note = " (float32 only; JAX_ENABLE_X64=1 for float64)"
        print(f"  {name:17s} " + (f"available on {where}{note}" if e["available"] else f"unavailable: {e['reason']}"))
    extras = info["deploy_and_scale_out"]
    print("deploy and scale out:")
    for name, value in extras.items():
        if name == "nccl":
            shown = {None: "needs a usable CuPy", True: "available in CuPy", False: "not in this CuPy"}[value]
        else:
            shown = value or "not installed"
        print(f"  {name:17s} {shown}")
    return 0


def _extras(backends) -> dict:
    """Versions of the optional packages behind export and MPI training (None: not installed), where mpiexec is,
    and whether CuPy has NCCL (None without a usable CuPy). Nothing is imported: MPI is not started."""
    import shutil
    from importlib import metadata

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    here = Path(sys.executable).parent / "mpiexec"  # the mpich wheel puts it next to the interpreter
    nccl = None
    if backends["cupy"]["available"]:
        from ..backend.nccl import load_nccl

        nccl = load_nccl() is not None
    return {"onnx": version("onnx"), "onnxruntime": version("onnxruntime"), "mpi4py": version("mpi4py"),
            "mpiexec": str(here) if here.is_file() else shutil.which("mpiexec"), "nccl": nccl}

