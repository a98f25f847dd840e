"""The ``portacnn`` argument parser. ``train``'s recipe flags parse through the rules of
:mod:`portacnn.recipe`, so a flag accepts exactly what a checkpoint may store."""

from __future__ import annotations

import argparse

from .._version import __version__
from ..backend import KNOWN_BACKENDS
from ..image_files import RESIZE_MODES
from ..models import ALIASES, MODELS, canonical_name
from ..recipe import DEFAULT_MOMENTUM, RULES
from ..validation import Integer, Rule
from .common import UsageError


#: what --data may name
DATA_SOURCES = ("a folder of class subfolders of images (with train/ and test/ inside, or not), a folder of IDX "
                "files, CIFAR-10/100 .bin files or their folder, a Kaggle-layout CSV, or an .npz (x_train/y_train/"
                "x_test/y_test)")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _wanted(rule) -> str:
    """A number rule's range in the words of the flags' messages ("a positive int", "at least 0 and below 1")."""
    kind = "int" if isinstance(rule, Integer) else "float"
    positive = rule.low == 1 if kind == "int" else (rule.low == 0 and rule.low_open)
    text = f"a positive {kind}" if positive else f"{'above' if getattr(rule, 'low_open', False) else 'at least'} {rule.low}"
    return text + (f" and below {rule.high}" if getattr(rule, "high_open", False) else "")


def flag_type(rule: Rule):
    """An argparse ``type=`` that reads an int (for an Integer rule) or a float and checks it by ``rule``: the
    flag accepts exactly what the rule does, and says what it wants in one line."""
    kind = int if isinstance(rule, Integer) else float
    want = _wanted(rule)

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not rule.accepts(value):
            too_big = rule.high is not None and not getattr(rule, "high_open", False) and value > rule.high
            raise argparse.ArgumentTypeError(f"must be {f'at most {rule.high}' if too_big else want}, got {text!r}")
        return rule.check(value, "value")

    parse.__name__ = want
    return parse


_positive_int = flag_type(Integer(1))


def _workers(text):
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None


def _common(sp):
    sp.add_argument("--backend", choices=KNOWN_BACKENDS, default=None,
                    help="array backend (default: $PORTACNN_BACKEND or numpy)")
    sp.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    sp.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                    help="CPU threads a batch is split across (default auto: NumPy backend, large enough batches)")


def _train_flags(t):
    t.add_argument("--model", choices=sorted(MODELS) + sorted(ALIASES), default=None, type=canonical_name,
                   help="network (default: seed_cnn; seed and kannada are aliases)")
    t.add_argument("--data", help=f"the training data: {DATA_SOURCES} (default: the embedded Kannada-MNIST)")
    t.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize the images of a folder to H x W (Pillow's LANCZOS; default: the images' own size, "
                        "which must then be one size)")
    t.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="read a folder's images as 1 (grey) or 3 (colour) channels (default: 3 if any is colour)")
    t.add_argument("--protocol", choices=RULES["protocol"].choices, default=None,
                   help="full: all training images; tutorial: 600/100 per class drawn from the training set")
    t.add_argument("--epochs", type=flag_type(RULES["epochs"]),
                   help="epochs (default: 10 seed_cnn, 15 lenet5, 12 kannada_cnn, 7 kannada_bn and kannada_nobn, 30 "
                        "resnet20)")
    t.add_argument("--batch-size", type=flag_type(RULES["batch_size"]), default=None, help="default 128")
    t.add_argument("--lr", type=flag_type(RULES["lr"]),
                   help="learning rate, the peak one with --schedule onecycle (default: 1e-3; 0.05 sgd)")
    t.add_argument("--optimizer", choices=RULES["optimizer"].choices, default=None, help="default adam")
    t.add_argument("--momentum", type=float, default=DEFAULT_MOMENTUM, help="SGD momentum (default 0.9)")
    t.add_argument("--weight-decay", type=flag_type(RULES["weight_decay"]), default=None, metavar="F",
                   help="weight decay of the kernels, never of biases or BatchNorm (default: 0.01 adamw, else 0)")
    t.add_argument("--schedule", choices=RULES["schedule"].choices, default=None,
                   help="learning rate: constant (default); step (x0.1 every third of the epochs); cosine (annealed "
                        "to 0 over the run, per step); onecycle (warm-up to --lr then down, per step, momentum cycled)")
    t.add_argument("--label-smoothing", type=flag_type(RULES["label_smoothing"]), default=None, metavar="F",
                   help="spread F of each target over all classes (default 0)")
    t.add_argument("--val-split", type=flag_type(RULES["val_split"]), default=None, metavar="F",
                   help="hold out F of the training images to validate on after each epoch (default 0: none; the "
                        "test set is scored once, at the end)")
    t.add_argument("--augment", choices=RULES["augment"].choices, default=None,
                   help="change every training batch: affine (random rotation up to 10 degrees, shift up to 10 %%, "
                        "scale 0.9-1.1, shear up to 5 degrees), affine+erase (also erase a random rectangle in half of "
                        "the images), crop+flip (pad 4 pixels of zeros on every side, crop back to the image size at a "
                        "random position, mirror half of the images left to right: the CIFAR standard, resnet20's "
                        "default); default none")
    t.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="normalise the input per channel with the training images' mean and standard deviation, "
                        "stored with the model (default: on for resnet20, else off)")
    t.add_argument("--early-stopping", type=flag_type(RULES["early_stopping"]), default=None, metavar="PATIENCE",
                   help="stop when the validation loss has not improved for PATIENCE epochs and keep the best "
                        "weights (needs --val-split)")
    t.add_argument("--seed", type=flag_type(RULES["seed"]), default=None, help="default 0")
    t.add_argument("--dtype", choices=RULES["dtype"].choices, default=None, help="default float32")
    t.add_argument("--out", help="output folder (default: runs/<timestamp>); one that holds another run is "
                                 "refused unless --overwrite")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    t.add_argument("--checkpoint-every", type=_positive_int, default=1, metavar="N",
                   help="write a resumable checkpoint every N epochs (default 1)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in CHECKPOINT (--model, --batch-size, "
                        "--seed, --dtype, --protocol, --limit, --epochs and --out default to that run's, and must agree "
                        "with it when given, but --epochs may extend it; --lr overrides its learning rate; a run on "
                        "--data files needs --data again)")
    t.add_argument("--limit", type=flag_type(RULES["limit"]), help="use only the first N training images (quick runs)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-plots", action="store_true", help="do not draw the PNG figures")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="portacnn", description="Train and run small CNNs on NumPy (CPU) or CuPy (GPU).")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a model (default: seed_cnn on the embedded Kannada-MNIST)")
    _train_flags(t)
    _common(t)

    e = sub.add_parser("evaluate", help="accuracy and loss of a saved model (or of an ensemble of several)")
    e.add_argument("model", nargs="+", help=".safetensors checkpoints written by portacnn (several: an ensemble "
                                          "averaging their probabilities)")
    e.add_argument("--data", help=f"{DATA_SOURCES} (default: the embedded Kannada-MNIST); the classes of a "
                                  "folder are matched to the model's by name")
    e.add_argument("--split", choices=["train", "test"], default="test")
    e.add_argument("--invert", action="store_true", help="a folder's images are dark on a light background")
    e.add_argument("--resize", choices=RESIZE_MODES, default="auto",
                   help="a folder's images of another size than the model's: as for predict (default auto)")
    e.add_argument("--batch-size", type=_positive_int, default=1000)
    e.add_argument("--allow-unsigned", action="store_true",
                   help="load a checkpoint without a SHA-256 (a foreign file; portacnn always writes one)")
    _common(e)

    pr = sub.add_parser("predict", help="classify PNG/JPEG images or the images of an IDX/CSV/.npz file")
    pr.add_argument("model", help="a .safetensors checkpoint written by portacnn (more .safetensors files after it "
                                   "make an ensemble averaging their probabilities)")
    pr.add_argument("inputs", nargs="+", help="image files, folders of them (every image inside, recursively, in "
                                              "sorted path order) or IDX/CSV/.npz/CIFAR .bin files")
    pr.add_argument("--invert", action="store_true",
                    help="images are dark on a light background (the Kannada models learnt light digits on black)")
    pr.add_argument("--resize", choices=RESIZE_MODES, default="auto",
                    help="an image of another size than the model's: auto (resize when its aspect ratio is within "
                         "10 %% of the model's, else refuse), stretch, pad (centred, with the training background) "
                         "or crop (centred), then resize (LANCZOS)")
    pr.add_argument("--csv", metavar="FILE", default=None,
                    help="also write the predictions to FILE as 'id,label' rows (id: the image path, the CSV's id "
                         "column or the row number; label: the class name, else its id)")
    pr.add_argument("--batch-size", type=_positive_int, default=1000)
    pr.add_argument("--allow-unsigned", action="store_true",
                    help="load a checkpoint without a SHA-256 (a foreign file; portacnn always writes one)")
    _common(pr)

    ex = sub.add_parser("explain", help="draw what a saved model looks at in one image: a layer's feature maps, the "
                                        "saliency map and Grad-CAM (pip install 'portacnn[plot]')")
    ex.add_argument("model", help="a .safetensors checkpoint written by portacnn")
    ex.add_argument("image", help="one PNG/JPEG image file, read as predict reads it")
    ex.add_argument("--out", metavar="DIR", default=None,
                    help="the folder to write feature_maps.png, saliency.png and grad_cam.png to (default: the "
                         "image's name without its suffix, then -explain, in the current folder)")
    ex.add_argument("--layer", metavar="N", default=None,
                    help="the layer whose feature maps are drawn and which Grad-CAM uses: its index in the model "
                         "(negative: from the end) or its name in the model's summary, such as 4.body.1 (default: the "
                         "last layer whose output is images)")
    ex.add_argument("--class", dest="class_id", metavar="C", default=None,
                    help="the class to explain, by id or name (default: the predicted class)")
    ex.add_argument("--invert", action="store_true",
                    help="the image is dark on a light background (the Kannada models learnt light digits on black)")
    ex.add_argument("--resize", choices=RESIZE_MODES, default="auto",
                    help="an image of another size than the model's: as for predict (auto, stretch, pad or crop)")
    ex.add_argument("--allow-unsigned", action="store_true",
                    help="load a checkpoint without a SHA-256 (a foreign file; portacnn always writes one)")
    ex.add_argument("--backend", choices=KNOWN_BACKENDS, default=None,
                    help="array backend (default: $PORTACNN_BACKEND or numpy)")
    ex.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    x = sub.add_parser("export", help="write a checkpoint as an ONNX model (pip install 'portacnn[onnx]')")
    x.add_argument("model", help="a .safetensors checkpoint written by portacnn")
    x.add_argument("output", help="the .onnx file to write")
    x.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default 17)")
    x.add_argument("--softmax", action="store_true", help="output probabilities instead of logits")
    x.add_argument("--allow-unsigned", action="store_true",
                   help="load a checkpoint without a SHA-256 (a foreign file; portacnn always writes one)")
    x.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    i = sub.add_parser("info", help="version, backends usable here and why others are not")
    i.add_argument("--json", action="store_true")
    return p
