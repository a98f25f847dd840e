"""``portacnn train``: a new run of a :class:`~portacnn.recipe.Recipe` from the flags, or a resumed one from its
checkpoint; the output folder claimed once the inputs are known to be good."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import data, distributed, plots
from .._atomic import atomic_write
from .._version import __version__
from ..backend import ENV_VAR
from ..checkpoint import optimizer_from_checkpoint
from ..layers import Conv2D
from ..sequential import load
from ..models import MODELS
from ..preprocessing import Preprocessing
from ..recipe import Recipe
from ..run_folder import RunFolder
from ..training import TrainingDiverged, evaluate, held_out_count
from .common import EXIT_DIVERGED, EXIT_INTERRUPTED, UsageError, _check_fits, _emit_json, _input_file, _say


def _out_folder(path: str | None) -> Path:
    """The folder a new run writes to: ``path``, or a fresh ``runs/<timestamp>[-k]`` (made here with an exclusive
    mkdir, so two runs started in the same second never pick the same one)."""
    if path is not None:
        return Path(path)
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        out = base if k == 1 else Path(f"{base}-{k}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue
    raise UsageError(f"could not make a fresh folder next to {base}; choose one with --out")


@contextlib.contextmanager
def _run_folder(args, comm):
    """The claimed output folder's path; under MPI rank 0 alone claims it and tells the others (or its error)."""
    def claim():  # a fresh runs/<timestamp> is made here, so RunFolder is told to remove it again if left empty
        return RunFolder(_out_folder(args.out), overwrite=args.overwrite,
                         resuming=Path(args.resume) if args.resume else None, made=args.out is None)

    if comm is None:
        with claim() as folder:
            yield folder.path
        return
    with contextlib.ExitStack() as stack:
        path, error = None, None
        if args.rank == 0:
            try:
                path = stack.enter_context(claim()).path
            except (UsageError, OSError) as e:
                error = e
        message, path = comm.bcast((None if error is None else str(error), path), root=0)
        if error is not None:
            raise error
        if message is not None:
            raise UsageError(message)  # the same failure on every rank (printed by rank 0 only)
        yield path


def _resumed(args):
    """(the recipe, the model, its restored optimizer or None) of ``--resume``: the saved run's recipe, with
    which the flags given must agree (:meth:`Recipe.resume`). Nothing from the checkpoint is used as a path."""
    _input_file(args.resume, "checkpoint file")
    model = load(args.resume, backend=args.backend)
    state = (model.checkpoint or {}).get("train_state")
    if not state:
        raise UsageError(f"{args.resume}: this checkpoint holds no training state to resume from")
    saved = Recipe.from_checkpoint(model.checkpoint.get("extra"), state, model.dtype, model.checkpoint.get("optimizer"))
    recipe = saved.resume(vars(args), args.resume, state["epoch"])
    if args.out is None:
        args.out = str(Path(args.resume).parent)
    optimizer = optimizer_from_checkpoint(model)
    if optimizer is not None and args.lr is not None:  # an explicit --lr overrides the saved one
        optimizer.lr = float(args.lr)
    return recipe, model, optimizer


def _prepare(args, comm):
    """The recipe, model, optimizer, data and what fit will run, everything a run can be refused for checked
    before its folder is claimed (a run that cannot start leaves nothing behind). Holds no collective."""
    size, channels = args.image_size, args.channels
    if args.resume:
        recipe, model, optimizer = _resumed(args)
        prep = model.preprocessing
        if prep is None and model.input_shape is not None and len(model.input_shape) == 3:  # an older checkpoint
            prep = Preprocessing.for_shape(model.input_shape)
        if prep is not None:  # the run reads its data as it did
            size, channels = _same(args, prep)
    else:
        recipe = Recipe.from_flags(vars(args))
        model = optimizer = None
    source = args.data or "embedded Kannada-MNIST"
    (xtr, ytr), (xte, yte), extra, note = data.train_test(args.data, protocol=recipe.protocol, seed=recipe.seed,
                                                          limit=recipe.limit, size=size, channels=channels, raw=True)
    names = extra.pop("class_names")
    if model is None:
        prep = Preprocessing.from_images(xtr, normalize=recipe.normalize)
        model = _network(recipe, args, prep, names, ytr, yte)
    elif names is not None and model.class_names is not None and list(names) != list(model.class_names):
        raise UsageError(f"--resume {args.resume}: {source} names its classes {names[:4]}..., not the "
                         f"{model.class_names[:4]}... that run trained on")
    model.workers = args.workers
    if comm is not None:
        distributed.check_trainable(model)
    if optimizer is None:
        optimizer = recipe.make_optimizer(model)
    _check_fits(model, xtr, source, args.resume or f"the {recipe.model} network")
    # the floats fit trains on, made once here (the model reads raw images the same way when it predicts)
    xtr, xte = prep.to_model_input(xtr, recipe.dtype), prep.to_model_input(xte, recipe.dtype)
    if "heldout" in extra:
        extra["heldout"] = (prep.to_model_input(extra["heldout"][0], recipe.dtype), extra["heldout"][1])
    # what fit would refuse (a split that leaves no training images, a schedule)
    plan = (held_out_count(len(ytr), recipe.val_split), recipe.callbacks(optimizer, len(ytr)), recipe.augmentation())
    return recipe, model, optimizer, (xtr, ytr), (xte, yte), extra, note, plan


def _listed(names, shown: int = 10) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _same(args, prep):
    """The (size, channels) a resumed run reads its data with: its own; ``--image-size``/``--channels`` given
    must agree."""
    def shown(value):
        return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    for flag, given, theirs in (("--image-size", args.image_size, list(prep.size)),
                                ("--channels", args.channels, prep.channels)):
        if given is not None and given != theirs:
            raise UsageError(f"--resume {args.resume}: that run read {flag} {shown(theirs)}, not {shown(given)}; drop "
                             f"{flag} to continue it")
    return tuple(prep.size), prep.channels


def _network(recipe, args, prep, names, ytr, yte):
    """A new run's network, built for the images it will read (their channels and size) and the classes of its
    data (their names' count, else the largest label + 1), with that preprocessing and those names."""
    classes = len(names) if names is not None else int(max(ytr.max(), yte.max())) + 1
    try:
        model = MODELS[recipe.model](backend=args.backend, dtype=recipe.dtype, seed=recipe.seed,
                                     input_shape=prep.input_shape, num_classes=max(classes, 2))
    except ValueError as e:
        raise UsageError(f"--model {recipe.model}: {e}") from None
    model.preprocessing = prep
    try:
        model.class_names = names
    except ValueError as e:
        raise UsageError(f"{args.data}: its class folders cannot name the classes ({e})") from None
    return model


def cmd_train(args) -> int:
    comm = distributed.auto_comm(strict=True)  # under mpiexec -n K: every rank runs all of this
    args.rank = distributed.rank(comm)
    if comm is not None and (args.backend or os.environ.get(ENV_VAR) or "numpy") == "cupy":
        distributed.use_local_gpu(comm)  # one GPU per rank of a node, before the model is built on it
    # under MPI every rank prepares, and a refusal on one (its data, its checkpoint) stops them all
    prepared = _prepare(args, comm) if comm is None else distributed.agree(comm, lambda: _prepare(args, comm))
    recipe, model, optimizer, (xtr, ytr), (xte, yte), extra, note, plan = prepared
    with _run_folder(args, comm) as out:
        return _train_into(args, recipe, out, model, optimizer, (xtr, ytr), (xte, yte), extra, note, plan, comm)


def _train_into(args, recipe, out, model, optimizer, train, test_set, extra, note, plan, comm=None) -> int:
    """Train into the claimed folder ``out``; ``plan`` is (held-out images, callbacks, augmentation), made before."""
    rank0 = distributed.rank(comm) == 0
    (xtr, ytr), (xte, yte) = train, test_set
    ckpt, epochs = out / "model.safetensors", recipe.epochs
    n_val, callbacks, transform = plan
    held = f"; {n_val} of them held out for validation" if n_val else ""
    ranks = f" in {distributed.size(comm)} MPI processes" if comm is not None else ""
    prep, names = model.preprocessing, model.class_names
    reads = "" if prep is None else f", read as {prep.describe()}"
    classes = "" if names is None else f", classes {_listed(names)}"
    _say(args, f"portacnn {__version__}: training {recipe.model} ({model.num_parameters()} parameters) on "
               f"{model.backend.name}{ranks}, {len(ytr)} images ({note}{held}){reads}{classes}, {epochs} "
               f"epoch{'s' if epochs != 1 else ''}, "
               f"batch {recipe.batch_size}, " + recipe.summary())
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is reported below
            history = model.fit(
                xtr, ytr, epochs=epochs, batch_size=recipe.batch_size, optimizer=optimizer,
                validation_split=recipe.val_split, seed=recipe.seed, label_smoothing=recipe.label_smoothing,
                callbacks=callbacks, augment=transform,
                progress=not args.no_progress and sys.stderr.isatty(),
                resume=model if args.resume else None, checkpoint_path=ckpt, checkpoint_every=args.checkpoint_every,
                checkpoint_extra=recipe.to_extra(), comm=comm,
                on_epoch_end=None if args.json or not rank0 else lambda e, logs: print(
                    f"epoch {e + 1}/{epochs}: " + "  ".join(f"{k} {v:.4f}" for k, v in logs.items()), flush=True),
            )
    except TrainingDiverged as e:
        if rank0:
            print(f"portacnn: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED

    def write_history():
        atomic_write(out / "history.json", json.dumps(history.to_dict(), indent=2).encode())

    if comm is None:
        write_history()
    else:
        distributed.on_rank0(comm, write_history)
    if history.signal is not None:  # asked to stop: saved (mid-run or complete), no evaluation or plots
        how, code = ("terminated (SIGTERM)", 128 + 15) if history.signal == "SIGTERM" else ("interrupted", EXIT_INTERRUPTED)
        if not ckpt.is_file():
            saved = "no checkpoint was written"
        elif history.interrupted:
            saved = f"checkpoint saved to {ckpt}; continue with: portacnn train --resume {ckpt}"
        else:
            saved = f"the run was complete; model saved to {ckpt}"
        if rank0:
            print(f"portacnn: {how}; {saved}", file=sys.stderr)
        return code
    test = evaluate(model, xte, yte, comm=comm)  # under MPI each rank scores its share of the test images
    result = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "epochs": epochs, "model": str(ckpt),
              "network": recipe.model, "backend": model.backend.name, "n_train": int(len(ytr)), "n_test": test["n"],
              "seconds_per_epoch": float(np.mean(history.epoch_times)) if history.epoch_times else None,
              "out": str(out), "history": str(out / "history.json")}
    if "heldout" in extra:
        held = evaluate(model, *extra["heldout"], comm=comm)
        result["heldout_accuracy"] = held["accuracy"]
    if not rank0:
        return 0  # the other ranks draw, write and print nothing
    if not args.no_plots:
        result["plots"] = _draw(out, model, history, xtr, ytr, xte, yte, args, recipe, test)
    written = [str(p) for p in (ckpt, out / "history.json") if p.is_file()]  # say "saved" only of what exists
    _say(args, f"test accuracy {test['accuracy'] * 100:.2f} % (loss {test['loss']:.4f}) on {test['n']} images"
               + (f"; tutorial held-out accuracy {result['heldout_accuracy'] * 100:.2f} %" if "heldout_accuracy" in result else ""),
         f"saved {' and '.join(written)}")
    if args.json:
        _emit_json(result)
    return 0


def _draw(out, model, history, xtr, ytr, xte, yte, args, recipe, test=None):
    """The run's figures in ``out``; the curves mark ``test``, the final test score (``evaluate``'s dict)."""
    if not plots.plots_available():
        print("portacnn: note: matplotlib is not installed, so no plots were drawn (pip install 'portacnn[plot]')",
              file=sys.stderr)
        return []
    conv = next((layer for layer in model.layers if isinstance(layer, Conv2D)), None)
    paths = plots.save_all(
        out, history=history.history,
        model_weight=None if conv is None else model.backend.to_numpy(conv.weight.data),
        images=xte, y_true=yte, proba=model.predict_proba(xte),
        sample_images=xtr[:40], sample_labels=ytr[:40], class_names=model.class_names,
        title="Kannada-MNIST samples" if args.data is None else f"Samples of {Path(args.data).name}",
        test=None if test is None else {"accuracy": test["accuracy"], "loss": test["loss"]},
    )
    transform = recipe.augmentation()
    if transform is not None:  # the same samples as the training run's augmentation draws them
        shown = transform(xtr[:40], np.random.default_rng([recipe.seed, 0]))
        plots.sample_grid(shown, ytr[:40], out / "augmented.png", class_names=model.class_names,
                          title=f"Training samples, {recipe.augment} augmentation").clear()
        paths.append(out / "augmented.png")
    _say(args, "plots: " + ", ".join(str(p) for p in paths))
    return [str(p) for p in paths]
