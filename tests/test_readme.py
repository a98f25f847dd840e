"""The README and the documentation pages against the code: the Quick start commands, the command-line
synopsis and the model names.

* The Quick start block's two lines are exactly the install-and-train line and the line ``.ci/run`` executes.
* The synopsis block under "## Command line" in the README lists every subcommand and every flag of
  ``portacnn.cli.build_parser()``, and nothing the parser does not have: adding a flag without documenting it
  (or documenting one that does not exist) fails here. (The site's Command line page shows this same block,
  taken from the README when the site is built: ``tools/docs/hooks.py``, checked by tests/test_docs.py.)
* Every model name written after ``--model`` anywhere in the README or on the documentation pages
  (``docs/**/*.md`` and the tutorial notebook) is one the code knows (a key of ``portacnn.models.MODELS`` or of
  an alias table in ``portacnn.models``) and the parser accepts; the synopsis names every network of the zoo;
  every ``pc.models.NAME(...)`` written there exists. Most of the README's prose moved to the pages, so these
  checks read both, and require the pages to hold such names (a check that found nothing to check fails).

Pure text and argparse: no training, no data, well under a second.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

QUICK_START = [
    'pip install ".[plot]" && portacnn train',
    'pip install -e ".[test]" torch==2.13.0 && python -m pytest -q -rs -m "slow or not slow"',
]
# a flag as written in a synopsis: -x or --long-name, not part of a longer word
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _user_docs() -> dict[str, str]:
    """{path relative to the repository: text} of the README, every Markdown page under docs/ and the text of
    every cell of the notebooks there."""
    import json

    texts = {"README.md": _text()}
    pages = sorted(DOCS.rglob("*.md"))
    assert pages, f"no documentation pages under {DOCS}"
    for page in pages:
        texts[str(page.relative_to(ROOT))] = page.read_text(encoding="utf-8")
    for notebook in sorted(DOCS.rglob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        texts[str(notebook.relative_to(ROOT))] = "\n".join("".join(c["source"]) for c in cells)
    return texts


def _section(title: str) -> list[str]:
    """The lines of the README section ``## title`` (up to the next ``## `` heading)."""
    lines = _text().splitlines()
    start = lines.index(f"## {title}")
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    return lines[start + 1 : end]


def _first_block(lines: list[str]) -> list[str]:
    """The lines inside the first fenced code block of ``lines``."""
    fences = [k for k, line in enumerate(lines) if line.startswith("```")]
    assert len(fences) >= 2, "no fenced code block in the section"
    return lines[fences[0] + 1 : fences[1]]


def _synopsis() -> dict[str, str]:
    """{subcommand: its synopsis text} from the first code block under "## Command line": a line starting
    with ``portacnn NAME`` opens a command; indented lines continue it."""
    commands, current = {}, None
    for line in _first_block(_section("Command line")):
        m = re.match(r"portacnn\s+([\w-]+)(.*)", line)
        if m:
            current = m.group(1)
            assert current not in commands, f"README synopsis lists 'portacnn {current}' twice"
            commands[current] = m.group(2)
        elif line.strip():
            assert current is not None and line[:1].isspace(), f"README synopsis: stray line {line!r}"
            commands[current] += " " + line.strip()
    return commands


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from portacnn.cli import build_parser

    parser = build_parser()
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(groups) == 1
    return dict(groups[0].choices)


def _options(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{flag: action} of a subcommand, without -h/--help."""
    return {flag: a for a in sub._actions if not isinstance(a, argparse._HelpAction) for flag in a.option_strings}


def _alternatives(text: str) -> dict[str, list[str]]:
    """{flag: [literal values]} for flags written ``--flag a|b|c`` (upper-case words are placeholders)."""
    found = {}
    for flag, value in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)[ =]([\w.|+-]+)", text):
        words = [w for w in value.split("|") if w and not w.isupper()]
        if "|" in value and words:
            found[flag] = words
    return found


def _model_names() -> dict[str, object]:
    """{name: network builder} for every name portacnn.models accepts: MODELS and any alias table there
    (a module-level dict whose name contains ALIAS, mapping a name to a MODELS key or to a builder)."""
    from portacnn import models

    names = dict(models.MODELS)
    for attr in dir(models):
        table = getattr(models, attr)
        if "ALIAS" in attr.upper() and isinstance(table, dict):
            for alias, target in table.items():
                names[alias] = models.MODELS.get(target, target) if isinstance(target, str) else target
    return names


def _parses(argv: list[str]) -> bool:
    from portacnn.cli import UsageError, build_parser

    try:
        build_parser().parse_args(argv)
    except (UsageError, SystemExit):
        return False
    return True


# -- (a) Quick start -------------------------------------------------------------------------------------
def test_readme_starts_with_title_and_quick_start():
    headings = [line for line in _text().splitlines() if line.startswith("#")]
    assert _text().startswith("# portacnn\n")
    assert headings[:2] == ["# portacnn", "## Quick start"]


def test_quick_start_block_is_exact():
    lines = _first_block(_section("Quick start"))
    assert lines == QUICK_START, f"the Quick start block must be exactly these two lines: {QUICK_START}"


def test_ci_run_extracts_the_test_line():
    """The same extraction as .ci/run (awk: lines of the first fenced block after '## Quick start', 2nd line)."""
    lines, inside, fences = [], False, 0
    for line in _text().splitlines():
        if line.startswith("## Quick start"):
            inside = True
        if inside and line.startswith("```"):
            fences += 1
            continue
        if inside and fences == 1:
            lines.append(line)
    assert lines[1] == QUICK_START[1]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "sed -n 2p" in ci and "## Quick start" in ci


# -- (b) the command-line synopsis -------------------------------------------------------------------------
def test_synopsis_lists_exactly_the_parsers_commands():
    assert set(_synopsis()) == set(_subparsers()), "README synopsis and portacnn.cli.build_parser() differ in subcommands"


def test_synopsis_flags_match_the_parser():
    """Every flag of every subcommand (what ``portacnn <command> --help`` lists, -h/--help aside) is in the
    README synopsis, and every flag the synopsis writes for a subcommand exists in the parser."""
    synopsis, problems = _synopsis(), []
    for command, sub in sorted(_subparsers().items()):
        in_parser = set(_options(sub))
        in_readme = set(FLAG.findall(synopsis.get(command, "")))
        if in_parser - in_readme:
            problems.append(f"'portacnn {command}' has flags the README synopsis (## Command line) does not list: "
                            f"{sorted(in_parser - in_readme)}")
        if in_readme - in_parser:
            problems.append(f"the README synopsis lists flags 'portacnn {command}' does not have: "
                            f"{sorted(in_readme - in_parser)}")
    assert not problems, "\n".join(problems)


def test_synopsis_values_are_accepted_and_complete():
    """Each ``--flag a|b`` value in the synopsis parses, and each choice the parser offers is written there
    (aliases of model names excepted: the README writes the canonical names)."""
    subs = _subparsers()
    positional = {"evaluate": ["m.safetensors"], "predict": ["m.safetensors", "x.png"],
                  "explain": ["m.safetensors", "x.png"]}
    for command, text in _synopsis().items():
        options = _options(subs[command])
        for flag, values in _alternatives(text).items():
            for value in values:
                argv = [command, *positional.get(command, []), flag, value]
                assert _parses(argv), f"README synopsis: 'portacnn {' '.join(argv)}' is rejected by the parser"
            choices = options[flag].choices
            if choices and flag != "--model":
                missing = set(map(str, choices)) - set(values)
                assert not missing, f"README synopsis: 'portacnn {command} {flag}' omits {sorted(missing)}"


# -- (c) model names, in the README and on the documentation pages -------------------------------------------
def test_model_names_in_docs_exist():
    known = _model_names()
    written = {}  # name -> the files that write it
    for path, text in _user_docs().items():
        for value in re.findall(r"--model[ =]([\w|]+)", text):
            for name in filter(None, value.split("|")):
                written.setdefault(name, set()).add(path)
    assert any(path != "README.md" for paths in written.values() for path in paths), \
        "no documentation page under docs/ names a network after --model"
    unknown = {name: sorted(paths) for name, paths in written.items() if name not in known}
    assert not unknown, (f"--model names that portacnn.models does not know (MODELS and aliases: {sorted(known)}), "
                         f"with where they are written: {unknown}")
    for name in written:
        assert _parses(["train", "--model", name]), f"'portacnn train --model {name}' is rejected by the parser"


def test_synopsis_names_every_network():
    from portacnn import models

    known = _model_names()
    listed = _alternatives(_synopsis()["train"]).get("--model", [])
    covered = {known[name] for name in listed if name in known}
    missing = [name for name, builder in models.MODELS.items() if builder not in covered]
    assert not missing, f"the README synopsis' --model list leaves out {missing}"


def test_python_api_model_builders_exist():
    from portacnn import models

    written = {}
    for path, text in _user_docs().items():
        for name in re.findall(r"pc\.models\.(\w+)\(", text):
            written.setdefault(name, set()).add(path)
    assert any(path != "README.md" for paths in written.values() for path in paths), \
        "no documentation page under docs/ shows a pc.models.NAME() call"
    for name, paths in sorted(written.items()):
        assert callable(getattr(models, name, None)), \
            f"{sorted(paths)} call pc.models.{name}(), which does not exist"
