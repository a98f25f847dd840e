"""The training recipe that ``portacnn train`` runs, in one place.

A :class:`Recipe` is everything that decides what a run computes: the network, the epochs, the batch size,
seed and dtype, the data it trained on, and how it trains (optimizer, learning rate, weight decay, schedule,
label smoothing, validation split, early stopping, augmentation). This module is the one home of

* the defaults: global (``TRAIN_DEFAULTS``, ``RECIPE_DEFAULTS``) and per network (``MODEL_RECIPES``,
  ``DEFAULT_EPOCHS``, ``DEFAULT_LR``), applied by :meth:`Recipe.from_flags` (a flag given explicitly wins);
* the rule of every field (``RULES``, in the vocabulary of :mod:`portacnn.validation`): the command line's
  flags parse through them, a :class:`Recipe` is checked by them, and so is a recipe read back from an
  untrusted checkpoint (:meth:`Recipe.check_stored`), so a flag and a stored value can never disagree;
* the ``extra`` dict a checkpoint stores (:meth:`Recipe.to_extra`, read back by :meth:`Recipe.from_checkpoint`;
  checkpoints written before the recipe was recorded hold none of it: they ran with ``RECIPE_DEFAULTS``);
* the resume reconciliation (:meth:`Recipe.resume`: a flag given with a resumed run must agree with it);
* the builders of the objects a recipe stands for (:meth:`Recipe.make_optimizer`, :meth:`Recipe.callbacks`,
  :meth:`Recipe.augmentation`).

Nothing read from a checkpoint is ever used as a path: ``data`` is a record of where a run's data came from.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from . import augment
from .optim import OPTIMIZERS, split_decay
from .optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, StepLR
from .validation import Boolean, Integer, Name, NoneValue, Options, Real, Rule, Text, _short, check

# -- bounds: a run's (epochs, batch size, counters) are the training state's, one home for both -----------------
from .train_state import MAX_BATCH_SIZE, MAX_COUNT, MAX_EPOCHS, MAX_TEXT  # noqa: E402

#: a seed (the checkpoint's metadata holds one below 2**128)
MAX_SEED = (1 << 128) - 1
#: characters of the short names (``model``)
MAX_NAME = 64

# -- vocabularies ----------------------------------------------------------------------------------------------
#: training protocols (``extra["protocol"]``)
PROTOCOLS = ("full", "tutorial")
#: the learning-rate schedules the command line offers (``extra["schedule"]``)
SCHEDULES = ("constant", "step", "cosine", "onecycle")
#: ... and its augmentations (``extra["augment"]``)
AUGMENTATIONS = ("none", "affine", "affine+erase", "crop+flip")
#: the float dtypes a run trains in
DTYPES = ("float32", "float64")

# -- defaults --------------------------------------------------------------------------------------------------
DEFAULT_EPOCHS = {"seed_cnn": 10, "lenet5": 15, "kannada_cnn": 12, "kannada_bn": 7, "kannada_nobn": 7,
                  # a CPU-sized run: the paper trains 64k steps of 128 images (~164 epochs); a CIFAR-10 epoch (50,000
                  # images of 41.1 M multiply-adds each) is ~1.5x a kannada_bn epoch (60,000 of 22.5 M), so 30 epochs
                  # are ~6x kannada_bn's default run, hours on 2 cores rather than days; the cosine schedule anneals
                  # to 0 over whatever number of epochs is given, so a shorter or longer run still ends annealed
                  "resnet20": 30}
#: epochs of a network DEFAULT_EPOCHS does not name (a resumed custom model)
FALLBACK_EPOCHS = 10
#: the learning rate of each optimizer (its keys are the optimizers the command line offers)
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.05, "rmsprop": 1e-3}
# train's flags that a resumed run takes from its checkpoint; given explicitly, they must agree with it
TRAIN_DEFAULTS = {"model": "seed_cnn", "batch_size": 128, "seed": 0, "dtype": "float32"}
# ... and the recipe (checkpoints written before these flags existed hold none: they ran with these values)
RECIPE_DEFAULTS = {"optimizer": "adam", "weight_decay": None, "schedule": "constant", "label_smoothing": 0.0,
                   "val_split": 0.0, "early_stopping": None, "augment": "none", "normalize": False}
# networks whose best recipe differs from the plain defaults (each flag given explicitly still wins)
MODEL_RECIPES = {"kannada_bn": {"optimizer": "adamw", "lr": 3e-3, "schedule": "onecycle", "label_smoothing": 0.1,
                                "augment": "affine", "val_split": 0.1}}
MODEL_RECIPES["kannada_nobn"] = MODEL_RECIPES["kannada_bn"]  # the BatchNorm ablation trains with the same recipe
# the CIFAR standard (He et al. 2016, 4.2: SGD, momentum 0.9 (DEFAULT_MOMENTUM), lr 0.1; weight decay 5e-4 as the
# common cosine-schedule recipes, for the kernels only; pad-4 crops and horizontal flips), the step schedule
# replaced by cosine annealing
MODEL_RECIPES["resnet20"] = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine",
                             "augment": "crop+flip", "normalize": True}
#: SGD's momentum (the other optimizers take none)
DEFAULT_MOMENTUM = 0.9
#: AdamW's weight decay when none is given (the other optimizers: 0)
ADAMW_WEIGHT_DECAY = 1e-2


class RecipeError(ValueError):
    """A recipe that cannot run, or a flag that disagrees with the run it resumes; one line."""


class PathRecord(Text):
    """Where a run's data came from, as text (possibly empty, no NUL); a record, never opened."""

    def __init__(self, max_length: int = MAX_TEXT):
        super().__init__(max_length, empty=True)

    def describe(self):
        return f"a string of at most {self.max_length} characters without NUL"

    def check(self, value, what):
        if isinstance(value, str) and "\x00" in value:
            self._fail(value, what)
        return super().check(value, what)


#: what each field may be when it is set (None aside): the flags, a Recipe and a stored recipe all obey these
RULES: dict[str, Rule] = {
    "model": Name(MAX_NAME),
    "epochs": Integer(1, MAX_EPOCHS),
    "batch_size": Integer(1, MAX_BATCH_SIZE),
    "seed": Integer(0, MAX_SEED),
    "dtype": Options(*DTYPES),
    "protocol": Options(*PROTOCOLS),
    "limit": Integer(1, MAX_COUNT),
    "data": PathRecord(),
    "optimizer": Options(*sorted(DEFAULT_LR)),
    "lr": Real(0, low_open=True),
    "weight_decay": Real(0),
    "schedule": Options(*SCHEDULES),
    "label_smoothing": Real(0, 1, high_open=True),
    "val_split": Real(0, 1, high_open=True),
    "early_stopping": Integer(1, MAX_EPOCHS),
    "augment": Options(*AUGMENTATIONS),
    "normalize": Boolean(),
}
#: fields that may be None: no protocol recorded (full), no limit, the embedded data, the optimizer's own
#: weight decay, no early stopping
NULLABLE = frozenset({"protocol", "limit", "data", "weight_decay", "early_stopping"})
#: the keys of a checkpoint's ``extra`` that hold the recipe, in the order they are written (batch size, seed
#: and dtype live in the checkpoint's training state and metadata); any other key is free-form
STORED = ("model", "epochs", "protocol", "limit", "data", "lr", *RECIPE_DEFAULTS)
#: what a resumed run takes from its checkpoint, in the order a disagreeing flag is reported
RESUMED = ("model", "batch_size", "seed", "dtype", "protocol", "limit", *RECIPE_DEFAULTS)


def rule(field: str) -> Rule:
    """The rule of a stored or constructed ``field``: ``RULES[field]``, or None for a nullable one."""
    return RULES[field] | NoneValue() if field in NULLABLE else RULES[field]


def _checked(rule_: Rule, value, what: str):
    """``check`` that also turns the OverflowError of an int beyond any float into the rule's ValueError."""
    try:
        return check(value, rule_, what)
    except OverflowError:
        raise ValueError(f"{what} must be {rule_.describe()}; got {_short(value)}") from None


def _canonical(name):
    from .models import canonical_name  # models -> model -> checkpoint, which checks stored recipes here

    return canonical_name(name) if isinstance(name, str) else name


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The training recipe of one run. ``epochs`` None is the network's default (``DEFAULT_EPOCHS``), ``lr``
    None the optimizer's (``DEFAULT_LR``; the peak rate of a one-cycle schedule); both are filled in, and every
    field is checked by its rule when a Recipe is made (``momentum``, which is not stored, is the optimizer's
    to check)."""

    model: str = TRAIN_DEFAULTS["model"]
    epochs: int | None = None
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    seed: int = TRAIN_DEFAULTS["seed"]
    dtype: str = TRAIN_DEFAULTS["dtype"]
    protocol: str = "full"
    limit: int | None = None
    data: str | None = None  # the resolved path of the data files (None: the embedded set); never opened
    optimizer: str = RECIPE_DEFAULTS["optimizer"]
    lr: float | None = None
    momentum: float = DEFAULT_MOMENTUM
    weight_decay: float | None = RECIPE_DEFAULTS["weight_decay"]
    schedule: str = RECIPE_DEFAULTS["schedule"]
    label_smoothing: float = RECIPE_DEFAULTS["label_smoothing"]
    val_split: float = RECIPE_DEFAULTS["val_split"]
    early_stopping: int | None = RECIPE_DEFAULTS["early_stopping"]
    augment: str = RECIPE_DEFAULTS["augment"]
    normalize: bool = RECIPE_DEFAULTS["normalize"]  # per-channel mean and std of the training images

    def __post_init__(self):
        values = {key: getattr(self, key) for key in RULES}
        if values["epochs"] is None:
            values["epochs"] = DEFAULT_EPOCHS.get(self.model, FALLBACK_EPOCHS)
        if values["lr"] is None:
            values["lr"] = DEFAULT_LR.get(self.optimizer)
        try:
            values = {key: _checked(rule(key), value, f"recipe {key}") for key, value in values.items()}
        except ValueError as e:
            raise RecipeError(str(e)) from None
        for key, value in values.items():
            object.__setattr__(self, key, value)
        if self.early_stopping and not self.val_split:
            raise RecipeError("--early-stopping watches the validation loss: give --val-split too "
                              "(e.g. --val-split 0.1)")

    # -- making one ----------------------------------------------------------------------------------------
    @classmethod
    def from_flags(cls, flags: dict) -> Recipe:
        """A new run's recipe from the ``train`` flags (a dict such as ``vars(args)``; None or absent: not given):
        ``TRAIN_DEFAULTS`` and ``RECIPE_DEFAULTS``, then the network's ``MODEL_RECIPES``, then every flag given.
        ``data`` is the path as given (it is recorded resolved)."""
        given = {f.name: flags[f.name] for f in dataclasses.fields(cls) if flags.get(f.name) is not None}
        model = _canonical(given.get("model", TRAIN_DEFAULTS["model"]))
        values = {**TRAIN_DEFAULTS, **RECIPE_DEFAULTS, **MODEL_RECIPES.get(model, {}), **given, "model": model}
        if values.get("data") is not None:
            values["data"] = str(Path(values["data"]).resolve())
        return cls(**values)

    @classmethod
    def from_checkpoint(cls, extra: dict | None, train_state: dict, dtype: str, optimizer: dict | None = None) -> Recipe:
        """The recipe a saved run trained with: its ``extra`` (checked by :meth:`check_stored` when the file was
        loaded), the batch size and seed of its training state and its dtype. What a checkpoint written before the
        recipe was recorded lacks is ``RECIPE_DEFAULTS``, except the optimizer (the type of the saved
        ``optimizer`` description) and the learning rate (the saved optimizer's)."""
        saved, trained = extra or {}, optimizer or {}
        recipe = {key: saved.get(key, default) for key, default in RECIPE_DEFAULTS.items()}
        if "optimizer" not in saved and trained.get("type") in DEFAULT_LR:  # written before the recipe was recorded
            recipe["optimizer"] = trained["type"]
        return cls(model=_canonical(saved.get("model", "custom")), epochs=saved.get("epochs"),
                   batch_size=train_state["batch_size"], seed=train_state["seed"], dtype=dtype,
                   protocol=saved.get("protocol") or "full", limit=saved.get("limit"), data=saved.get("data"),
                   lr=saved.get("lr", trained.get("lr")), **recipe)

    def to_extra(self) -> dict:
        """What a checkpoint stores as its ``extra`` (the format every portacnn checkpoint has used)."""
        return {key: getattr(self, key) for key in STORED}

    @staticmethod
    def check_stored(extra) -> None:
        """Refuse a recipe read back from an untrusted checkpoint unless each of its ``STORED`` keys obeys the
        field's rule (a ValueError of one line naming the key as ``'key'``); other keys are free-form."""
        if not isinstance(extra, dict):
            raise ValueError(f"it is not an object: {_short(extra)}")
        for key in STORED:
            if key in extra:
                _checked(rule(key), extra[key], f"'{key}'")

    # -- resuming ------------------------------------------------------------------------------------------
    def resume(self, flags: dict, source: str, done: int) -> Recipe:
        """The run to continue, this stored recipe, reconciled with the flags given now (``flags`` as for
        :meth:`from_flags`; ``source`` names the checkpoint, ``done`` its finished epochs). A ``RESUMED`` flag
        must agree with the run; ``--data`` must name the run's files again (a checkpoint never chooses which
        files are opened); ``--epochs`` may extend a run without a schedule; ``--lr`` is refused with a schedule
        (without one, the caller gives it to the restored optimizer: the recipe keeps the run's peak rate)."""
        where = f"--resume {source}:"
        for key in RESUMED:
            value, given = getattr(self, key), flags.get(key)
            given = _canonical(given) if key == "model" else given
            if given is not None and given != value:
                flag = "--" + key.replace("_", "-")
                raise RecipeError(f"{where} that run used {flag} {value}, not {flag} {given}; drop {flag} to "
                                  "continue it, or start a new run without --resume")
        data = flags.get("data")
        if self.data is not None and data is None:
            raise RecipeError(f"{where} that run trained on {self.data!r}; give --data with that path to continue "
                              "it (a checkpoint never chooses which files are opened)")
        if data is not None and str(Path(data).resolve()) != self.data:
            was = repr(self.data) if self.data else "the embedded Kannada-MNIST"
            raise RecipeError(f"{where} that run trained on {was}, not --data {data}")
        epochs = flags.get("epochs")
        if epochs is None:
            epochs = self.epochs
        elif self.schedule != "constant" and epochs != self.epochs:
            raise RecipeError(f"{where} that run's {self.schedule} schedule spans {self.epochs} epochs; it cannot "
                              f"change to --epochs {epochs} (drop --epochs)")
        elif epochs < done:
            raise RecipeError(f"{where} that run has already trained {done} epochs, more than --epochs {epochs}; "
                              f"give at least {done} (or drop --epochs)")
        if flags.get("lr") is not None and self.schedule != "constant":
            raise RecipeError(f"{where} that run's learning rate follows its {self.schedule} schedule; drop --lr to "
                              "continue it")
        momentum = flags.get("momentum")
        return dataclasses.replace(self, epochs=epochs, momentum=self.momentum if momentum is None else momentum)

    # -- what it stands for --------------------------------------------------------------------------------
    def summary(self) -> str:
        """``"adamw lr 0.003, onecycle schedule, label smoothing 0.1, affine augmentation"``: what ``train``
        prints of its recipe (what is off is left out)."""
        parts = [f"{self.optimizer} lr {self.lr:g}"]
        parts += [f"{self.schedule} schedule"] if self.schedule != "constant" else []
        parts += [f"label smoothing {self.label_smoothing:g}"] if self.label_smoothing else []
        parts += [f"{self.augment} augmentation"] if self.augment != "none" else []
        parts += [f"early stopping after {self.early_stopping} epochs without progress"] if self.early_stopping else []
        return ", ".join(parts)

    def make_optimizer(self, model):
        """The optimizer; with weight decay, in two groups (no decay on biases and BatchNorm)."""
        decay = self.weight_decay if self.weight_decay is not None else (
            ADAMW_WEIGHT_DECAY if self.optimizer == "adamw" else 0.0)
        params = split_decay(model, decay) if decay else model.parameters()
        if self.optimizer == "sgd":
            return OPTIMIZERS["sgd"](params, lr=self.lr, momentum=self.momentum, weight_decay=decay)
        return OPTIMIZERS[self.optimizer](params, lr=self.lr, weight_decay=decay)

    def augmentation(self):
        """The transform ``augment`` stands for (None for "none"). "crop+flip" crops back to each batch's own image
        size (``RandomCrop(size=None)``), so it fits any images."""
        if self.augment == "none":
            return None
        if self.augment == "crop+flip":
            return augment.Compose([augment.RandomCrop(size=None, padding=4), augment.RandomHorizontalFlip(p=0.5)])
        affine = augment.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5)
        if self.augment == "affine":
            return affine
        return augment.Compose([affine, augment.RandomErasing(p=0.5, scale=(0.02, 0.15))])

    def callbacks(self, optimizer, n_train: int) -> list:
        """The learning-rate schedule and early stopping, as ``fit()`` callbacks, for ``n_train`` images."""
        from .callbacks import EarlyStopping, LearningRateScheduler  # imported here: training imports the checkpoint
        from .training import held_out_count

        found, epochs = [], self.epochs
        steps = epochs * math.ceil((n_train - held_out_count(n_train, self.val_split)) / self.batch_size)
        if self.schedule == "step":
            found.append(LearningRateScheduler(StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1), per="epoch"))
        elif self.schedule == "cosine":
            found.append(LearningRateScheduler(CosineAnnealingLR(optimizer, T_max=steps), per="step"))
        elif self.schedule == "onecycle":
            found.append(LearningRateScheduler(OneCycleLR(optimizer, max_lr=self.lr, total_steps=steps), per="step"))
        if self.early_stopping:
            found.append(EarlyStopping(monitor="val_loss", patience=self.early_stopping, restore_best_weights=True))
        return found


__all__ = ["AUGMENTATIONS", "DEFAULT_EPOCHS", "DEFAULT_LR", "MODEL_RECIPES", "PROTOCOLS", "RECIPE_DEFAULTS", "RULES",
           "SCHEDULES", "STORED", "TRAIN_DEFAULTS", "Recipe", "RecipeError", "rule"]
