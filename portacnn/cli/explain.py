"""``portacnn explain``: what a saved model looks at in one image (:mod:`portacnn.explain`), drawn as three PNGs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .. import data
from ..image_files import read_images
from ..labels import class_label
from ..preprocessing import InputWarning
from .commands import _load_models, _warn
from .common import UsageError, _check_fits, _emit_json, _input_file, _say

#: the files written, in order
FILES = ("feature_maps.png", "saliency.png", "grad_cam.png")


def _class_id(text, model):
    """``--class``: a class name of the model, or a class id; None when not given."""
    if text is None:
        return None
    names, count = model.class_names, model.num_classes()
    if names is not None and text in names:
        return list(names).index(text)
    try:
        k = int(text)
    except ValueError:
        k = None
    if k is None or k < 0 or (count is not None and k >= count):
        known = [] if count is None else [f"ids 0..{count - 1}"]
        if names is not None:
            known.append("names " + ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))
        raise UsageError(f"--class {text}: not a class of the model ({'; '.join(known) or 'which has no known classes'})")
    return k


def cmd_explain(args) -> int:
    from .. import explain, plots

    if not plots.plots_available():
        raise UsageError("explain draws its figures with matplotlib, which is not installed: "
                         "pip install 'portacnn[plot]'")
    image = _input_file(args.image, "image file")
    if image.suffix.lower() not in data.IMAGE_SUFFIXES:
        raise UsageError(f"{args.image}: not an image file ({', '.join(sorted(data.IMAGE_SUFFIXES))}); explain reads "
                         "one image")
    out = Path(args.out) if args.out is not None else Path(f"{image.stem}-explain")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    args.workers = 1  # one image: never worth splitting across threads
    model = _load_models(args, [args.model])
    if args.layer is not None:
        try:
            explain.resolve_layer(model, args.layer)
        except ValueError as e:
            raise UsageError(f"--{e}") from None
    class_id = _class_id(args.class_id, model)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        raw = read_images([image], model, resize=args.resize, invert=args.invert)
        prep = model.preprocessing
        if prep is not None:
            caught.extend(warnings.WarningMessage(text, InputWarning, "", 0)
                          for text in prep.questions(raw, [args.image]))
        _warn(caught, set())
    _check_fits(model, raw, args.image, args.model)
    # the floats the model computes on, read as predict reads the image (its preprocessing, else scaling to [0, 1])
    x = prep.to_model_input(raw, model.dtype) if prep is not None else data.preprocess(raw)

    proba = np.asarray(model.predict_proba(x))[0]
    predicted = int(proba.argmax())
    k = predicted if class_id is None else class_id
    try:
        layer = (explain.last_image_layer(model, x.shape[1:]) if args.layer is None
                 else explain.resolve_layer(model, args.layer))
    except ValueError as e:
        raise UsageError(f"{args.model}: {e}") from None
    maps = explain.feature_maps(model, x, layer)
    if maps.ndim != 3:
        raise UsageError(f"--layer {args.layer}: layer {layer} gives flat output ({maps.shape[0]} features), not "
                         "images; choose a layer before the network flattens them")
    names = model.class_names
    label = class_label(names, k)
    what = explain._path(model, layer)[0][-1]
    what = what[0][what[1]].short()  # the layer itself, as model.summary() shows it
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FILES]
    plots.feature_maps(maps, paths[0], title=f"Feature maps of layer {layer} ({what})").clear()
    plots.saliency(raw[0], explain.saliency(model, x, k), paths[1], title=f"Saliency for class {label}").clear()
    cam = explain.grad_cam(model, x, k, layer)
    plots.grad_cam(raw[0], cam, paths[2], title=f"Grad-CAM for class {label} at layer {layer}").clear()

    lines = [f"{args.image}: {class_label(names, predicted)} ({float(proba[predicted]):.3f})"]
    if k != predicted:
        lines.append(f"explaining class {label} ({float(proba[k]):.3f})")
    lines.append(f"wrote {', '.join(str(p) for p in paths)} (layer {layer}: {what})")
    if not cam.any():
        lines.append(f"note: Grad-CAM is zero everywhere at layer {layer}: no location there adds evidence for class "
                     f"{label} (try another --layer)")
    _say(args, *lines)
    if args.json:
        result = {"image": args.image, "class": predicted, "probability": float(proba[predicted]), "explained_class": k,
                  "layer": layer, "files": [str(p) for p in paths]}
        if names is not None:
            result.update(label=class_label(names, predicted), explained_label=label)
        _emit_json(result)
    return 0
