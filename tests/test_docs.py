"""The documentation site against the code (``mkdocs.yml``, ``docs/``; how it is built: docs/development.md).

Fast (the default suite; griffe reads the sources, nothing is built or imported):

* every public name has an entry in the API reference: the public modules are enumerated from the package
  (``portacnn``, each non-private module directly under it that :data:`NOT_PUBLIC` does not exclude with its
  reason, and every module a public module's ``__all__`` names, such as ``portacnn.optim.lr_scheduler``); a
  module's public names are its ``__all__``, or, without one, what it defines without a leading underscore
  (griffe's rule, which is also the site's ``filters: public``). Each must be rendered by a ``::: path``
  directive of a page under docs/, directly or as a member of the directive's object (its ``members:``
  option when it has one);
* every ``PORTACNN_*`` environment variable the code reads is in the table of
  docs/guide/environment.md, and that table names no variable the code does not read;
* the Command line page takes its synopsis from the README (the block tests/test_readme.py checks).

Slow (the README's test line runs them; CI runs that line):

* ``mkdocs build --strict`` succeeds without a single warning (a broken link or anchor, a page left out of the
  navigation, a reference to an object that does not exist, a bad link in the notebook), and the
  ``objects.inv`` it writes lists every public name above; the built Command line page holds every command of
  the synopsis and the tutorial page its figures;
* the tutorial notebook runs from top to bottom without an error (nbclient, kernel ``python3`` from
  ipykernel) and reaches the held-out accuracy it claims; the committed notebook (which the site shows
  without running it) holds the outputs of such a run.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "portacnn"
NOTEBOOK = DOCS / "tutorial.ipynb"
ENVIRONMENT_PAGE = DOCS / "guide" / "environment.md"
CLI_PAGE = DOCS / "guide" / "cli.md"

#: modules directly under portacnn that are not part of the Python API, and why; every other non-private
#: module there is public and must be in the reference (a new module fails test (c) until it is one or the other)
NOT_PUBLIC = {
    "portacnn.cli": "the implementation of the `portacnn` command, whose interface is the command line "
                    "(documented on the Command line page, its synopsis checked against the parser)",
    "portacnn.dask_inference": "what Sequential.predict/predict_proba run when given a Dask array; used through them",
    "portacnn.inputs": "the conversion of every library's arrays to a model's batches, behind fit/predict/evaluate",
    "portacnn.kernels": "the seam where backends register fast paths for the layers' primitives; not for users "
                        "(its two switches, PORTACNN_PORTABLE and PORTACNN_COMPILED, are on the environment page)",
    "portacnn.parallel": "the row-shard machinery behind Sequential(workers=...); used through `workers` and "
                         "Sequential.shards_for",
    "portacnn.recipe": "the command line's training recipe (defaults, rules, resume checks) of `portacnn train`",
    "portacnn.run_folder": "the output-folder lock of `portacnn train`",
    "portacnn.sequential": "its two public names are portacnn.Sequential and portacnn.load (checked below)",
    "portacnn.train_state": "the trainer's position and the check of its saved form, inside checkpoints",
    "portacnn.validation": "the vocabulary of argument checks the constructors share; its rules reach users "
                           "only as the one-line errors they raise",
}

DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$")


# -- what is public ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _griffe():
    griffe = pytest.importorskip("griffe", reason="griffe comes with the docs extra (mkdocstrings[python])")
    return griffe, griffe.load("portacnn", search_paths=[str(ROOT)], resolve_aliases=True,
                               resolve_external=False, allow_inspection=False)


def _top_level_modules() -> set[str]:
    """Non-private modules and packages directly under portacnn/, from the file tree."""
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    return {f"portacnn.{n}" for n in names if not n.startswith("_")}


def _public_names(obj) -> list[str]:
    """A module's (or class's) public names: ``__all__`` when it has one, else griffe's ``is_public``."""
    exports = getattr(obj, "exports", None)
    if exports is not None:
        return [e if isinstance(e, str) else e.name for e in exports]
    return [name for name, member in obj.members.items() if member.is_public]


def _public_modules(pkg) -> dict[str, object]:
    """{dotted name: griffe module} of every public module (see the module docstring)."""
    found = {"portacnn": pkg}
    for name in sorted(_top_level_modules() - set(NOT_PUBLIC)):
        found[name] = pkg[name.split(".", 1)[1]]
    todo = list(found.items())
    while todo:  # modules a public module's __all__ names are public too
        name, module = todo.pop()
        for member in _public_names(module):
            target = module[member]
            target = target.final_target if target.is_alias else target
            if target.is_module and f"{name}.{member}" not in found:
                found[f"{name}.{member}"] = target
                todo.append((f"{name}.{member}", target))
    return found


@functools.lru_cache(maxsize=None)
def expected_identifiers() -> dict[str, str]:
    """{identifier the reference must hold: the module whose public names include it}."""
    _, pkg = _griffe()
    expected = {}
    for name, module in _public_modules(pkg).items():
        expected[name] = name
        for member in _public_names(module):
            expected[f"{name}.{member}"] = name
    return expected


# -- what the docs render ------------------------------------------------------------------------------------
def directives() -> list[tuple[str, str, dict]]:
    """[(page, object path, options)] of every ``::: path`` block under docs/ (its indented YAML options)."""
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with the docs extra (mkdocs)")

    found = []
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for k, line in enumerate(lines):
            m = DIRECTIVE.match(line)
            if not m:
                continue
            block = []
            for more in lines[k + 1 :]:
                if more.strip() and not more.startswith(" "):
                    break
                block.append(more)
            options = (yaml.safe_load(textwrap.dedent("\n".join(block))) or {}).get("options", {})
            found.append((str(page.relative_to(ROOT)), m.group(1), options or {}))
    return found


def rendered_identifiers() -> dict[str, str]:
    """{identifier: page} of every object the directives render: the directive's object and its members (the
    ``members:`` option's, or the public ones, as the site's ``filters: public`` selects them)."""
    griffe, pkg = _griffe()
    rendered = {}
    for page, path, options in directives():
        assert path == "portacnn" or path.startswith("portacnn."), f"{page}: '::: {path}' is not a portacnn object"
        try:
            obj = pkg if path == "portacnn" else pkg[path.split(".", 1)[1]]
        except KeyError:
            raise AssertionError(f"{page}: '::: {path}' names no object of portacnn") from None
        obj = obj.final_target if obj.is_alias else obj
        rendered[path] = page
        members = options.get("members")
        if members is None:
            members = _public_names(obj) if (obj.is_module or obj.is_class) else []
        for member in members:
            assert member in obj.members, f"{page}: '::: {path}' lists member {member!r}, which {path} does not have"
            rendered[f"{path}.{member}"] = page
    return rendered


# -- (c) every public name has a reference entry (fast) ------------------------------------------------------
def test_not_public_lists_existing_modules_only():
    stale = sorted(set(NOT_PUBLIC) - _top_level_modules())
    assert not stale, f"NOT_PUBLIC names modules that do not exist (remove them): {stale}"


def test_every_public_name_has_a_reference_entry():
    expected, rendered = expected_identifiers(), rendered_identifiers()
    assert len(expected) > 200 and "portacnn.layers.Conv2D" in expected  # the enumeration itself works
    missing = sorted(name for name in expected if name not in rendered)
    assert not missing, ("public names with no entry in the API reference (add a '::: module' page under "
                         f"docs/api/ and to mkdocs.yml's nav, or a member to a directive's list): {missing}")


def test_modules_left_out_keep_their_names_public_elsewhere():
    """portacnn.sequential is left out because its names are portacnn's own: that must stay true."""
    _, pkg = _griffe()
    top = set(_public_names(pkg))
    names = set(_public_names(pkg["sequential"]))
    assert names and names <= top, f"portacnn.sequential defines public names portacnn does not export: {names - top}"


# -- every PORTACNN_* variable is documented (fast) ----------------------------------------------------------
VARIABLE = re.compile(r"\bPORTACNN_[A-Z0-9_]*[A-Z0-9]\b")


def _variables_in_code() -> dict[str, set[str]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for name in VARIABLE.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _variables_in_table() -> set[str]:
    """The variables of the first table of the environment page (rows starting ``| `PORTACNN_...` |``)."""
    lines = ENVIRONMENT_PAGE.read_text(encoding="utf-8").splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("| variable |"))
    table = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        table.append(line)
    return {m.group(1) for line in table if (m := re.match(r"\|\s*`(PORTACNN_[A-Z0-9_]+)`\s*\|", line))}


def test_every_environment_variable_is_documented():
    in_code, in_table = _variables_in_code(), _variables_in_table()
    assert "PORTACNN_BACKEND" in in_code and len(in_code) >= 5  # the search itself works
    missing = {name: sorted(paths) for name, paths in in_code.items() if name not in in_table}
    assert not missing, f"variables the code reads that {ENVIRONMENT_PAGE.relative_to(ROOT)} does not list: {missing}"
    stale = sorted(in_table - set(in_code))
    assert not stale, f"{ENVIRONMENT_PAGE.relative_to(ROOT)} lists variables the code does not read: {stale}"


# -- the Command line page shows the README's synopsis (fast) ------------------------------------------------
def _hooks():
    sys.path.insert(0, str(ROOT / "tools" / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "tools" / "docs"))
    return hooks


def test_cli_page_takes_the_synopsis_from_the_readme():
    hooks = _hooks()
    assert CLI_PAGE.read_text(encoding="utf-8").count(hooks.MARKER) == 1, \
        f"{CLI_PAGE.relative_to(ROOT)} must show the README's synopsis (the line {hooks.MARKER!r})"
    block = hooks.readme_synopsis().splitlines()
    assert block[0].startswith("```") and block[-1].startswith("```")
    assert any(line.startswith("portacnn train") for line in block)


# -- (a) the strict build (slow) -------------------------------------------------------------------------------
def read_inventory(path: Path) -> dict[str, str]:
    """{name: role} of a Sphinx ``objects.inv`` (version 2: four header lines, then zlib-compressed lines
    ``name domain:role priority uri dispname``)."""
    raw = path.read_bytes()
    header, _, body = raw.partition(b"\n")
    assert header == b"# Sphinx inventory version 2", f"{path}: not a version-2 inventory ({header!r})"
    for _ in range(3):
        line, _, body = body.partition(b"\n")
        assert line.startswith(b"#"), f"{path}: malformed header line {line!r}"
    entries = {}
    for line in zlib.decompress(body).decode("utf-8").splitlines():
        m = re.match(r"(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)", line)
        assert m, f"{path}: malformed entry {line!r}"
        entries[m.group(1)] = m.group(2)
    return entries


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                          "--site-dir", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return site, run


@pytest.mark.slow
def test_site_builds_strict_without_warnings(built_site):
    site, run = built_site
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{output[-6000:]}"
    warnings = [line for line in output.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert not warnings, "mkdocs build printed warnings:\n" + "\n".join(warnings)
    assert (site / "index.html").is_file() and (site / "api" / "portacnn" / "index.html").is_file()


@pytest.mark.slow
def test_built_inventory_lists_every_public_name(built_site):
    site, run = built_site
    assert run.returncode == 0, "the site did not build (see test_site_builds_strict_without_warnings)"
    inventory = read_inventory(site / "objects.inv")
    missing = sorted(name for name in expected_identifiers() if name not in inventory)
    assert not missing, f"public names missing from the built site's objects.inv: {missing}"


@pytest.mark.slow
def test_built_pages_show_the_synopsis_and_the_figures(built_site):
    site, run = built_site
    assert run.returncode == 0, "the site did not build (see test_site_builds_strict_without_warnings)"
    cli = (site / "guide" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = [line.split()[1] for line in _hooks().readme_synopsis().splitlines() if line.startswith("portacnn ")]
    assert commands and all(f"portacnn {c}" in cli for c in commands), "the Command line page lacks the synopsis"
    assert "synopsis from README" not in cli, "the synopsis marker was not replaced"
    tutorial = (site / "tutorial" / "index.html").read_text(encoding="utf-8")
    figures = len(re.findall(r'<img[^>]+src="data:image/png;base64,', tutorial))
    assert figures >= 5, f"the tutorial page shows {figures} figures; the notebook draws 5"
    assert 'src=""' not in tutorial.split("MathJax configuration")[0][-400:], "the notebook page loads no MathJax"


# -- (b) the tutorial runs (slow) ------------------------------------------------------------------------------
CLAIM = re.compile(r"claim is at least (\d+(?:\.\d+)?) %")
REACHED = re.compile(r"held-out accuracy: (\d+(?:\.\d+)?) %")


def _cells(notebook: dict) -> list[dict]:
    """A notebook's cells as plain dicts, multi-line strings joined (the file stores lists of lines)."""
    text = lambda v: "".join(v) if isinstance(v, list) else (v or "")
    return [{"type": c["cell_type"], "source": text(c["source"]), "count": c.get("execution_count"),
             "outputs": [{**o, "text": text(o.get("text"))} for o in c.get("outputs", [])]}
            for c in notebook["cells"]]


def _claim(cells) -> float:
    claims = [float(m) for c in cells if c["type"] == "markdown" for m in CLAIM.findall(c["source"])]
    assert len(claims) == 1, f"the tutorial must state one accuracy claim ('claim is at least N %'); found {claims}"
    return claims[0]


def _reached(cells) -> list[float]:
    return [float(m) for c in cells for o in c["outputs"] if o.get("output_type") == "stream"
            for m in REACHED.findall(o["text"])]


def _figures(cells) -> int:
    return sum("image/png" in o.get("data", {}) for c in cells for o in c["outputs"])


def _errors(cells) -> list:
    return [o for c in cells for o in c["outputs"] if o.get("output_type") == "error"]


@pytest.mark.slow
def test_tutorial_runs_and_reaches_its_claimed_accuracy(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the docs extra is not installed: pip install -e '.[docs]'")
    nbclient = pytest.importorskip("nbclient", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("ipykernel", reason="the docs extra is not installed: pip install -e '.[docs]'")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # run from a clean slate, whatever the committed outputs are
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300, record_timing=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a cell that raises fails here (CellExecutionError, with the traceback)
    cells = _cells(json.loads(nbformat.writes(notebook)))
    assert not _errors(cells), f"the tutorial raised: {_errors(cells)}"
    claim, reached = _claim(cells), _reached(cells)
    assert len(reached) == 1, f"the tutorial must print one 'held-out accuracy: N %' line; found {reached}"
    assert reached[0] >= claim, f"the tutorial claims at least {claim} % held-out accuracy and reached {reached[0]} %"
    assert _figures(cells) >= 5, "the tutorial drew fewer than its 5 figures"


def test_committed_tutorial_holds_the_outputs_of_a_run():
    """The site shows the notebook as committed (execute=False): it must hold the outputs of one complete run,
    top to bottom, and that run's accuracy must meet the claim too."""
    cells = _cells(json.loads(NOTEBOOK.read_text(encoding="utf-8")))
    counts = [c["count"] for c in cells if c["type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), \
        f"docs/tutorial.ipynb was not committed as one run from top to bottom (execution counts {counts})"
    assert not _errors(cells), f"docs/tutorial.ipynb was committed with an error: {_errors(cells)}"
    reached, claim = _reached(cells), _claim(cells)
    assert len(reached) == 1 and reached[0] >= claim, \
        f"the committed tutorial shows held-out accuracy {reached}, below its claim of {claim} %"
    assert _figures(cells) >= 5, "the committed tutorial shows fewer than its 5 figures"
