"""The ``portacnn`` command: train, evaluate, predict, info.

Every failure a user can cause (bad flags, bad files, a missing GPU, bad environment variables, running
out of memory) ends with one line on stderr and exit code 2; a diverged training run exits 1; Ctrl-C saves
a checkpoint and exits 130, SIGTERM does the same and exits 143 (a second signal stops at once). With
``--json`` the last line of stdout is one JSON object.

``mpiexec -n K portacnn train ...`` trains data-parallel over MPI (:mod:`portacnn.distributed`): rank 0 alone
claims the output folder, writes files and prints; the other ranks train silently, and every rank exits with the
same code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import array_api_compat
import numpy as np

from . import augment, data, distributed, kernels, plots
from ._atomic import atomic_write
from ._version import __version__
from .backend import ENV_VAR, KNOWN_BACKENDS, BackendUnavailableError, check_environment, get_backend, unusable_reason
from .checkpoint import AUGMENTATIONS, SCHEDULES, check_architecture, optimizer_from_checkpoint
from .data import limits
from .ensemble import Ensemble
from .layers import Conv2D
from .model import load
from .models import ALIASES, MODELS, canonical_name
from .optim import SGD, Adam, AdamW, RMSprop, split_decay
from .optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, StepLR
from .run_folder import RunFolder
from .training import EarlyStopping, LearningRateScheduler, TrainingDiverged, evaluate, held_out

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130
DEFAULT_EPOCHS = {"seed_cnn": 10, "lenet5": 15, "kannada_cnn": 12, "kannada_bn": 7, "kannada_nobn": 7}
# train's flags that a resumed run takes from its checkpoint; given explicitly, they must agree with it
TRAIN_DEFAULTS = {"model": "seed_cnn", "batch_size": 128, "seed": 0, "dtype": "float32"}
# ... and the recipe (checkpoints written before these flags existed hold none: they ran with these values)
RECIPE_DEFAULTS = {"optimizer": "adam", "weight_decay": None, "schedule": "constant", "label_smoothing": 0.0,
                   "val_split": 0.0, "early_stopping": None, "augment": "none"}
# networks whose best recipe differs from the plain defaults (each flag given explicitly still wins)
MODEL_RECIPES = {"kannada_bn": {"optimizer": "adamw", "lr": 3e-3, "schedule": "onecycle", "label_smoothing": 0.1,
                                "augment": "affine", "val_split": 0.1}}
MODEL_RECIPES["kannada_nobn"] = MODEL_RECIPES["kannada_bn"]  # the BatchNorm ablation trains with the same recipe
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.05, "rmsprop": 1e-3}



class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number(kind, low=0, high=None, above=False):
    """An argparse type: a finite ``kind`` (int or float) at least ``low`` (above it with ``above``) and below
    ``high`` when given."""
    if above and low == 0:
        want = f"a positive {kind.__name__}"
    else:
        want = f"{'above' if above else 'at least'} {low}" + (f" and below {high}" if high is not None else "")

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    parse.__name__ = want
    return parse


def _positive(kind):
    return _number(kind, above=True)


_nonneg_int, _nonneg_float, _fraction = _number(int), _number(float), _number(float, 0, 1)


def _workers(text):
    if text == "auto":
        return text
    try:
        return _positive(int)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="portacnn", description="Train and run small CNNs on NumPy (CPU) or CuPy (GPU).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp):
        sp.add_argument("--backend", choices=KNOWN_BACKENDS, default=None,
                        help="array backend (default: $PORTACNN_BACKEND or numpy)")
        sp.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        sp.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                        help="CPU threads a batch is split across (default auto: NumPy backend, large enough batches)")

    t = sub.add_parser("train", help="train a model (default: seed_cnn on the embedded Kannada-MNIST)")
    t.add_argument("--model", choices=sorted(MODELS) + sorted(ALIASES), default=None, type=canonical_name,
                   help="network (default: seed_cnn; seed and kannada are aliases)")
    t.add_argument("--data", help="folder of IDX files, a CSV or an .npz (default: the embedded Kannada-MNIST)")
    t.add_argument("--protocol", choices=["full", "tutorial"], default=None,
                   help="full: all training images; tutorial: 600/100 per class drawn from the training set")
    t.add_argument("--epochs", type=_positive(int),
                   help="epochs (default: 10 seed_cnn, 15 lenet5, 12 kannada_cnn, 7 kannada_bn and kannada_nobn)")
    t.add_argument("--batch-size", type=_positive(int), default=None, help="default 128")
    t.add_argument("--lr", type=_positive(float),
                   help="learning rate, the peak one with --schedule onecycle (default: 1e-3; 0.05 sgd)")
    t.add_argument("--optimizer", choices=sorted(DEFAULT_LR), default=None, help="default adam")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    t.add_argument("--weight-decay", type=_nonneg_float, default=None, metavar="F",
                   help="weight decay of the kernels, never of biases or BatchNorm (default: 0.01 adamw, else 0)")
    t.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning rate: constant (default); step (x0.1 every third of the epochs); cosine (annealed "
                        "to 0 over the run, per step); onecycle (warm-up to --lr then down, per step, momentum cycled)")
    t.add_argument("--label-smoothing", type=_fraction, default=None, metavar="F",
                   help="spread F of each target over all classes (default 0)")
    t.add_argument("--val-split", type=_fraction, default=None, metavar="F",
                   help="hold out F of the training images to validate on after each epoch (default 0: none; the "
                        "test set is scored once, at the end)")
    t.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="change every training batch: affine (random rotation up to 10 degrees, shift up to 10 %%, "
                        "scale 0.9-1.1, shear up to 5 degrees), affine+erase (also erase a random rectangle in half of "
                        "the images); default none")
    t.add_argument("--early-stopping", type=_positive(int), default=None, metavar="PATIENCE",
                   help="stop when the validation loss has not improved for PATIENCE epochs and keep the best "
                        "weights (needs --val-split)")
    t.add_argument("--seed", type=_nonneg_int, default=None, help="default 0")
    t.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default float32")
    t.add_argument("--out", help="output folder (default: runs/<timestamp>); one that holds another run is "
                                 "refused unless --overwrite")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    t.add_argument("--checkpoint-every", type=_positive(int), default=1, metavar="N",
                   help="write a resumable checkpoint every N epochs (default 1)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in CHECKPOINT (--model, --batch-size, "
                        "--seed, --dtype, --protocol, --limit, --epochs and --out default to that run's, and must agree "
                        "with it when given, but --epochs may extend it; --lr overrides its learning rate; a run on "
                        "--data files needs --data again)")
    t.add_argument("--limit", type=_positive(int), help="use only the first N training images (quick runs)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-plots", action="store_true", help="do not draw the PNG figures")
    common(t)

    e = sub.add_parser("evaluate", help="accuracy and loss of a saved model (or of an ensemble of several)")
    e.add_argument("model", nargs="+", help=".safetensors checkpoints written by portacnn (several: an ensemble "
                                          "averaging their probabilities)")
    e.add_argument("--data", help="folder of IDX files (one *images* and one *labels* file), a CSV or an .npz")
    e.add_argument("--split", choices=["train", "test"], default="test")
    e.add_argument("--batch-size", type=_positive(int), default=1000)
    e.add_argument("--allow-unsigned", action="store_true",
                   help="load a checkpoint without a SHA-256 (a foreign file; portacnn always writes one)")
    common(e)

    pr = sub.add_parser("predict", help="classify PNG/JPEG images or the images of an IDX/CSV/.npz file")
    pr.add_argument("model", help="a .safetensors checkpoint written by portacnn (more .safetensors files after it "
                                   "make an ensemble averaging their probabilities)")
    pr.add_argument("inputs", nargs="+", help="image files (greyscale, white digit on black) or IDX/CSV/.npz files")
    pr.add_argument("--invert", action="store_true", help="images are dark digits on a light background")
    pr.add_argument("--batch-size", type=_positive(int), default=1000)
    pr.add_argument("--allow-unsigned", action="store_true",
                    help="load a checkpoint without a SHA-256 (a foreign file; portacnn always writes one)")
    common(pr)

    x = sub.add_parser("export", help="write a checkpoint as an ONNX model (pip install 'portacnn[onnx]')")
    x.add_argument("model", help="a .safetensors checkpoint written by portacnn")
    x.add_argument("output", help="the .onnx file to write")
    x.add_argument("--opset", type=_positive(int), default=17, help="ONNX opset (default 17)")
    x.add_argument("--softmax", action="store_true", help="output probabilities instead of logits")
    x.add_argument("--allow-unsigned", action="store_true",
                   help="load a checkpoint without a SHA-256 (a foreign file; portacnn always writes one)")
    x.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    i = sub.add_parser("info", help="version, backends usable here and why others are not")
    i.add_argument("--json", action="store_true")
    return p


# -- helpers ------------------------------------------------------------------------------------------
def _say(args, *lines):
    if not getattr(args, "json", False) and getattr(args, "rank", 0) == 0:
        for line in lines:
            print(line, flush=True)


def _emit_json(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


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


def _check_fits(model, images, source, model_path):
    """The images' shape against the model's architecture first (no array is made: a 20000x20000 image is
    refused by its activation memory, not by running it), then one image through the model, so a size or
    channel mismatch is one clear line, not a traceback."""

    shape = tuple(int(d) for d in images.shape[1:])
    shape = (1,) + shape if len(shape) == 2 else shape
    text = "x".join(str(d) for d in images.shape[1:])
    try:
        check_architecture(model.architecture(), shape, model.dtype)
        model.forward(data.preprocess(np.asarray(images[:1])))
    except (ValueError, RuntimeError, TypeError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{source}: its {text} images do not fit the model in {model_path} ({first})") from None


def _chunks(images, batch_size, target_bytes=64 << 20):
    """Spans of whole batches holding about ``target_bytes`` of float32 pixels each: the unit the CLI scales to
    float32 at a time, so memory follows the image size and the batch, not the number of images."""
    n = int(images.shape[0])
    per_image = 4 * math.prod(int(d) for d in images.shape[1:])
    step = max(batch_size, (target_bytes // max(per_image, 1) // batch_size) * batch_size)
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


# -- commands -----------------------------------------------------------------------------------------
def _make_optimizer(model, args):
    """The optimizer the flags ask for; with weight decay, in two groups (no decay on biases and BatchNorm)."""
    lr = args.peak_lr
    decay = args.weight_decay if args.weight_decay is not None else (1e-2 if args.optimizer == "adamw" else 0.0)
    params = split_decay(model, decay) if decay else model.parameters()
    if args.optimizer == "sgd":
        return SGD(params, lr=lr, momentum=args.momentum, weight_decay=decay)
    return {"adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}[args.optimizer](params, lr=lr, weight_decay=decay)


def _augmentation(name):
    """The transform ``--augment name`` stands for (None for "none")."""
    if name == "none":
        return None
    affine = augment.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5)
    if name == "affine":
        return affine
    return augment.Compose([affine, augment.RandomErasing(p=0.5, scale=(0.02, 0.15))])


def _callbacks(args, optimizer, epochs, n_train) -> list:
    """The learning-rate schedule and early stopping the flags ask for, as fit() callbacks."""
    found = []
    steps = epochs * math.ceil((n_train - held_out(n_train, args.val_split)) / args.batch_size)
    if args.schedule == "step":
        found.append(LearningRateScheduler(StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1), per="epoch"))
    elif args.schedule == "cosine":
        found.append(LearningRateScheduler(CosineAnnealingLR(optimizer, T_max=steps), per="step"))
    elif args.schedule == "onecycle":
        found.append(LearningRateScheduler(OneCycleLR(optimizer, max_lr=args.peak_lr, total_steps=steps), per="step"))
    if args.early_stopping:
        found.append(EarlyStopping(monitor="val_loss", patience=args.early_stopping, restore_best_weights=True))
    return found


def _resume_settings(args, model) -> str:
    """Take a resumed run's settings into ``args`` (a flag given explicitly must agree with the run, or it is an
    error naming both values); returns the network's name. Nothing from the checkpoint is used as a path."""
    state = (model.checkpoint or {}).get("train_state")
    if not state:
        raise UsageError(f"{args.resume}: this checkpoint holds no training state to resume from")
    saved = model.checkpoint.get("extra") or {}

    run = {"model": canonical_name(saved.get("model", "custom")), "batch_size": state["batch_size"], "seed": state["seed"],
           "dtype": model.dtype, "protocol": saved.get("protocol") or "full", "limit": saved.get("limit"),
           **{key: saved.get(key, default) for key, default in RECIPE_DEFAULTS.items()}}
    trained = model.checkpoint.get("optimizer") or {}
    if "optimizer" not in saved and trained.get("type") in DEFAULT_LR:  # written before the recipe was recorded
        run["optimizer"] = trained["type"]
    for key, value in run.items():
        given = getattr(args, key)
        if given is not None and given != value:
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"--resume {args.resume}: that run used {flag} {value}, not {flag} {given}; "
                             f"drop {flag} to continue it, or start a new run without --resume")
        setattr(args, key, value)
    trained_on = saved.get("data")
    if trained_on is not None and args.data is None:
        raise UsageError(f"--resume {args.resume}: that run trained on {trained_on!r}; give --data with that path to "
                         "continue it (a checkpoint never chooses which files are opened)")
    if args.data is not None and str(Path(args.data).resolve()) != trained_on:
        was = repr(trained_on) if trained_on else "the embedded Kannada-MNIST"
        raise UsageError(f"--resume {args.resume}: that run trained on {was}, not --data {args.data}")
    if args.epochs is None:
        args.epochs = saved.get("epochs")
    elif args.schedule != "constant" and args.epochs != saved.get("epochs"):
        raise UsageError(f"--resume {args.resume}: that run's {args.schedule} schedule spans {saved.get('epochs')} "
                         f"epochs; it cannot change to --epochs {args.epochs} (drop --epochs)")
    elif args.epochs < state["epoch"]:
        raise UsageError(f"--resume {args.resume}: that run has already trained {state['epoch']} epochs, more than "
                         f"--epochs {args.epochs}; give at least {state['epoch']} (or drop --epochs)")
    if args.out is None:
        args.out = str(Path(args.resume).parent)
    args.peak_lr = saved.get("lr", trained.get("lr", DEFAULT_LR[args.optimizer]))  # what a schedule is built from
    return run["model"]


@contextlib.contextmanager
def _run_folder(args, comm):
    """The claimed output folder's path; under MPI rank 0 alone claims it and tells the others (or its error)."""
    def claim():
        return RunFolder(_out_folder(args.out), overwrite=args.overwrite,
                         resuming=Path(args.resume) if args.resume else None)

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


def cmd_train(args) -> int:
    comm = distributed.auto_comm(strict=True)  # under mpiexec -n K: every rank runs all of this
    args.rank = distributed.rank(comm)
    if comm is not None and (args.backend or os.environ.get(ENV_VAR) or "numpy") == "cupy":
        distributed.use_local_gpu(comm)  # one GPU per rank of a node, before the model is built on it
    if args.resume:
        model = load(args.resume, backend=args.backend)
        model_name = _resume_settings(args, model)
        optimizer = optimizer_from_checkpoint(model)
        if args.lr is not None and args.schedule != "constant":
            raise UsageError(f"--resume {args.resume}: that run's learning rate follows its {args.schedule} schedule; "
                             "drop --lr to continue it")
        if optimizer is not None and args.lr is not None:  # an explicit --lr overrides the saved one
            optimizer.lr = float(args.lr)
    else:
        if args.model is None:
            args.model = TRAIN_DEFAULTS["model"]
        for key, value in {**TRAIN_DEFAULTS, **RECIPE_DEFAULTS, **MODEL_RECIPES.get(args.model, {})}.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.peak_lr = args.lr or DEFAULT_LR[args.optimizer]
        model = MODELS[args.model](backend=args.backend, dtype=args.dtype, seed=args.seed)
        optimizer = None
        model_name = args.model
    model.workers = args.workers
    if comm is not None:
        distributed.check_trainable(model)  # refused before any folder is claimed
    args.protocol = args.protocol or "full"
    if args.early_stopping and not args.val_split:
        raise UsageError("--early-stopping watches the validation loss: give --val-split too (e.g. --val-split 0.1)")
    epochs = args.epochs or DEFAULT_EPOCHS.get(model_name, 10)
    if optimizer is None:
        optimizer = _make_optimizer(model, args)
    (xtr, ytr), (xte, yte), extra, note = data.train_test(args.data, protocol=args.protocol, seed=args.seed,
                                                          limit=args.limit)
    _check_fits(model, xtr, args.data or "embedded Kannada-MNIST", args.resume or f"the {model_name} network")
    # the folder is claimed only once the inputs are known to be good: nothing half-made otherwise
    with _run_folder(args, comm) as out:
        return _train_into(args, out, model, model_name, optimizer, epochs, (xtr, ytr), (xte, yte), extra,
                           note, atomic_write, TrainingDiverged, comm)


def _train_into(args, out, model, model_name, optimizer, epochs, train, test_set, extra, note, atomic_write,
                TrainingDiverged, comm=None) -> int:
    rank0 = distributed.rank(comm) == 0
    (xtr, ytr), (xte, yte) = train, test_set
    ckpt = out / "model.safetensors"
    run_info = {"model": model_name, "epochs": epochs, "protocol": args.protocol, "limit": args.limit,
                "data": None if args.data is None else str(Path(args.data).resolve()),
                "lr": args.peak_lr, **{key: getattr(args, key) for key in RECIPE_DEFAULTS}}
    n_val = held_out(len(ytr), args.val_split)
    held = f"; {n_val} of them held out for validation" if n_val else ""
    recipe = [f"{args.optimizer} lr {args.peak_lr:g}"]
    recipe += [f"{args.schedule} schedule"] if args.schedule != "constant" else []
    recipe += [f"label smoothing {args.label_smoothing:g}"] if args.label_smoothing else []
    recipe += [f"{args.augment} augmentation"] if args.augment != "none" else []
    recipe += [f"early stopping after {args.early_stopping} epochs without progress"] if args.early_stopping else []
    ranks = f" in {distributed.size(comm)} MPI processes" if comm is not None else ""
    _say(args, f"portacnn {__version__}: training {model_name} ({model.num_parameters()} parameters) on "
               f"{model.backend.name}{ranks}, {len(ytr)} images ({note}{held}), {epochs} epochs, batch {args.batch_size}, "
               + ", ".join(recipe))
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is reported below
            history = model.fit(
                xtr, ytr, epochs=epochs, batch_size=args.batch_size, optimizer=optimizer,
                validation_split=args.val_split, seed=args.seed, label_smoothing=args.label_smoothing,
                callbacks=_callbacks(args, optimizer, epochs, len(ytr)), augment=_augmentation(args.augment),
                progress=not args.no_progress and sys.stderr.isatty(),
                resume=model if args.resume else None, checkpoint_path=ckpt, checkpoint_every=args.checkpoint_every,
                checkpoint_extra=run_info, comm=comm,
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
              "network": model_name, "backend": model.backend.name, "n_train": int(len(ytr)), "n_test": test["n"],
              "seconds_per_epoch": float(np.mean(history.epoch_times)) if history.epoch_times else None,
              "out": str(out), "history": str(out / "history.json")}
    if "heldout" in extra:
        held = evaluate(model, *extra["heldout"], comm=comm)
        result["heldout_accuracy"] = held["accuracy"]
    if not rank0:
        return 0  # the other ranks draw, write and print nothing
    if not args.no_plots:
        result["plots"] = _draw(out, model, history, xtr, ytr, xte, yte, args)
    written = [str(p) for p in (ckpt, out / "history.json") if p.is_file()]  # say "saved" only of what exists
    _say(args, f"test accuracy {test['accuracy'] * 100:.2f} % (loss {test['loss']:.4f}) on {test['n']} images"
               + (f"; tutorial held-out accuracy {result['heldout_accuracy'] * 100:.2f} %" if "heldout_accuracy" in result else ""),
         f"saved {' and '.join(written)}")
    if args.json:
        _emit_json(result)
    return 0


def _draw(out, model, history, xtr, ytr, xte, yte, args):
    if not plots.plots_available():
        print("portacnn: note: matplotlib is not installed, so no plots were drawn (pip install 'portacnn[plot]')",
              file=sys.stderr)
        return []
    conv = next((layer for layer in model.layers if isinstance(layer, Conv2D)), None)
    paths = plots.save_all(
        out, history=history.history,
        model_weight=None if conv is None else model.backend.to_numpy(conv.weight.data),
        images=xte, y_true=yte, proba=model.predict_proba(xte),
        sample_images=xtr[:40], sample_labels=ytr[:40],
    )
    transform = _augmentation(args.augment)
    if transform is not None:  # the same samples as the training run's augmentation draws them
        shown = transform(xtr[:40], np.random.default_rng([args.seed, 0]))
        paths.append(plots.sample_grid(shown, ytr[:40], out / "augmented.png",
                                       title=f"Training samples, {args.augment} augmentation"))
    _say(args, "plots: " + ", ".join(str(p) for p in paths))
    return [str(p) for p in paths]


def _load_models(args, paths):
    """The checkpoints ``paths`` as one model, or as an :class:`Ensemble` of several."""
    models = []
    for path in paths:
        model = load(path, backend=args.backend, allow_unsigned=args.allow_unsigned)
        model.workers = args.workers
        models.append(model)
    if len(models) == 1:
        return models[0]
    try:
        return Ensemble(models)
    except ValueError as e:
        raise UsageError(f"{', '.join(paths)}: these models cannot form an ensemble: {e}") from None


def _members(model):
    return model.models if isinstance(model, Ensemble) else [model]


def cmd_evaluate(args) -> int:
    model = _load_models(args, args.model)
    x, y, _ = data.load_split(args.data, args.split)
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
        p = Path(text)
        if not p.is_file():
            raise UsageError(f"{text}: no such file")
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
    from .export import export_checkpoint

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
        from .backend.nccl import load_nccl

        nccl = load_nccl() is not None
    return {"onnx": version("onnx"), "onnxruntime": version("onnxruntime"), "mpi4py": version("mpi4py"),
            "mpiexec": str(here) if here.is_file() else shutil.which("mpiexec"), "nccl": nccl}


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
            "info": cmd_info}


def main(argv=None) -> int:
    # under mpiexec only rank 0 prints errors: the ranks fail alike (one line in all), or learn of another's failure
    say = print if distributed.launched_rank() == 0 else (lambda *a, **k: None)
    try:
        check_environment()
        kernels.check_environment()
        limits.check_environment()
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as e:
        say(f"portacnn: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except distributed.RankFailed as e:  # another MPI rank failed (out of memory, a file it could not write)
        say(f"portacnn: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, BackendUnavailableError, OSError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, OSError) and e.filename and e.strerror:
            message = f"{e.filename}: {e.strerror}"
        say(f"portacnn: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        say("portacnn: error: out of memory; use a smaller --batch-size or --limit, or a machine with more memory",
            file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # a second Ctrl-C / SIGTERM during training, or Ctrl-C elsewhere
        signum = getattr(e, "signum", 2)
        say("portacnn: " + ("terminated" if signum == 15 else "interrupted"), file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
