"""Tests of the portacnn.data package as a whole: it stands alone, and its public names are re-exported.

(Replaces test_data_module_is_standalone, which loaded the former single-file data.py on its own.)
"""

from __future__ import annotations

import re
import subprocess
import sys

from datahelp import PORTACNN_DIR

from portacnn import data

# imports portacnn.data in a fresh interpreter whose 'portacnn' is an empty stub: portacnn/__init__.py
# (which imports the backends, layers and models) never runs, so anything portacnn.data needs from
# outside itself would either fail to import or show up in sys.modules
ALONE = r"""
import sys, types
from pathlib import Path
portacnn = types.ModuleType("portacnn")
portacnn.__path__ = [sys.argv[1]]
sys.modules["portacnn"] = portacnn
from portacnn import data
from PIL import Image
data.limits.check_environment()
x, y = data.load_kannada_mnist("test")
assert x.shape == (10000, 28, 28), x.shape
png = Path(sys.argv[2]) / "digit.png"
Image.fromarray(x[0]).save(png)
assert (data.read_image(png, invert=False) == x[0]).all()
(xtr, ytr), (xte, yte), _, _ = data.train_test(None, limit=10)
assert xtr.shape == (10, 1, 28, 28) and len(yte) == 10000
print(sorted(m for m in sys.modules if m.startswith("portacnn.")
             and not (m == "portacnn.data" or m.startswith("portacnn.data."))))
"""



def test_data_package_is_standalone(tmp_path):
    """portacnn.data imports nothing from portacnn outside portacnn.data: no import in its source leaves the
    package, and it loads and works in an interpreter where the rest of portacnn was never imported."""
    package = PORTACNN_DIR / "data"
    sources = sorted(package.glob("*.py"))
    assert len(sources) > 10
    leaving = re.compile(r"^\s*(from\s+\.\.|from\s+portacnn(?!\.data\b)|import\s+portacnn(?!\.data\b))", re.M)
    for path in sources:
        assert not leaving.search(path.read_text(encoding="utf-8")), f"{path.name} imports from outside portacnn.data"
    proc = subprocess.run([sys.executable, "-c", ALONE, str(PORTACNN_DIR), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def test_public_names_are_re_exported():
    """Every name the rest of portacnn, the tests and the benchmarks use from portacnn.data."""
    names = ["load_idx", "open_idx", "open_any", "load_csv", "load_npz", "load_any", "load_kannada_mnist",
             "tutorial_split", "preprocess", "find_idx_pair", "load_folder_pair", "embedded_data_dir", "DataError",
             "DataFileNotFoundError", "EMBEDDED_DATA_DIR", "IdxImages", "IMAGE_SUFFIXES", "read_image", "load_split",
             "train_test", "limits", "to_channels_first", "open_image", "resize_images", "load_cifar",
             "load_image_folder", "list_images", "Split", "data_kind", "image_folder_files"]  # fmt: skip
    for name in names:
        assert hasattr(data, name), name
    assert sorted(data.__all__) == sorted(names)
    assert callable(data.preprocess)  # the function, not the module portacnn.data.preprocessing
    assert issubclass(data.DataError, ValueError)
    assert issubclass(data.DataFileNotFoundError, data.DataError)
    assert issubclass(data.DataFileNotFoundError, FileNotFoundError)
    assert data.EMBEDDED_DATA_DIR == data.embedded_data_dir() == PORTACNN_DIR.resolve() / "data" / "kannada_mnist"
    assert data.EMBEDDED_DATA_DIR.is_dir()
