"""``portacnn evaluate``, ``predict``, ``export`` and ``info``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import array_api_compat
import numpy as np

from .. import data, kernels
from .._version import __version__
from ..backend import KNOWN_BACKENDS, get_backend, unusable_reason
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


def cmd_evaluate(args) -> int:
    model = _load_models(args, args.model)
    split = data.load_split(args.data, args.split)
    x, y = split.images, split.labels
    source = args.data or f"embedded Kannada-MNIST {args.split}"
    if y is None:
        raise UsageError(f"{args.data}: holds no labels, so accuracy cannot be computed (use 'portacnn predict')")
    for member, path in zip(_members(model), args.model):
        _check_fits(member, x, source, path)
    loss_sum, correct, n = 0.0, 0, int(x.shape[0])
    for lo, hi in _chunks(x, args.batch_size):  # float32 copies one chunk at a time: memory does not grow with N
        r = model.evaluate(data.preprocess(x[lo:hi]), y[lo:hi], batch_size=args.batch_size)
        loss_sum += r["loss"] * r["n"]
        correct += round(r["accuracy"] * r["n"])
    result = {"accuracy": correct / n, "loss": loss_sum / n, "n": n, "models": len(_members(model))}
    what = "" if len(args.model) == 1 else f" (ensemble of {len(args.model)} models)"
    _say(args, f"accuracy {result['accuracy'] * 100:.2f} %  loss {result['loss']:.4f}  on {n} images ({source})"
               + what)
    if args.json:
        _emit_json(result)
    return 0


def _inputs(paths, invert):
    """[(name, uint8 images (N, H, W), one_image)] from image files and IDX/CSV/npz files.

    Consecutive image files are grouped into one array; data files stay as they are (a plain IDX file
    read lazily), so nothing here grows with the size of a data file but its uint8 images.
    """

    groups, pictures, names = [], [], []
    for text in paths:
        p = _input_file(text, "image or data file")
        if p.suffix.lower() in data.IMAGE_SUFFIXES:
            names.append(text)
            pictures.append(data.read_image(p, invert))
            continue
        groups.append((text, data.open_any(p)[0], False))
    if pictures:
        groups.insert(0, (names, np.stack(pictures), True))
    return groups


def cmd_predict(args) -> int:
    paths = [args.model]
    while args.inputs and args.inputs[0].lower().endswith(".safetensors"):  # never an input: more models
        paths.append(args.inputs.pop(0))
    if not args.inputs:
        raise UsageError("predict needs at least one input file after the model checkpoints")
    model = _load_models(args, paths)
    groups = _inputs(args.inputs, args.invert)
    for name, images, single in groups:
        for member, path in zip(_members(model), paths):
            _check_fits(member, images, name[0] if single else name, path)
    out = sys.stdout
    if args.json:  # streamed, so a million predictions never sit in memory as Python objects
        out.write('{"predictions": [')
    first = True
    for name, images, single in groups:
        for lo, hi in _chunks(images, args.batch_size):
            proba = model.predict_proba(data.preprocess(images[lo:hi]), batch_size=args.batch_size)
            classes = proba.argmax(axis=1)
            for k, c in enumerate(classes):
                label = name[lo + k] if single else f"{name}[{lo + k}]"
                p = float(proba[k, c])
                if args.json:
                    out.write(("" if first else ", ") + json.dumps({"input": label, "class": int(c), "probability": p},
                                                                   sort_keys=True))
                    first = False
                else:
                    out.write(f"{label}: {int(c)} ({p:.3f})\n")
    if args.json:
        out.write("]}\n")
    out.flush()
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
        print(f"  {name:17s} " + (f"available on {where}" if e["available"] else f"unavailable: {e['reason']}"))
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

