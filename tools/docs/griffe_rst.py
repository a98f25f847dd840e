"""A griffe extension for the documentation site: portacnn's docstrings are written for ``help()`` and
read as reStructuredText-flavoured plain text; mkdocstrings renders Markdown. Before rendering, this turns
the few reST habits the docstrings use into their Markdown equivalents, in the site only (the docstrings
themselves are not changed):

* a cross-reference role (``:class:`~portacnn.Sequential```, ``:func:`fit```, ``:mod:`.rules```) becomes a link
  to the reference entry of that object when the site has one, and plain code otherwise (an *optional*
  autorefs link, so a reference to an undocumented helper is never a broken link);
* a paragraph that ends in ``::`` (reST's "a literal block follows") ends in ``:``; the indented block after it
  is a Markdown code block already;
* a section title underlined with ``---`` or ``===`` becomes a bold line (a heading would enter the page's
  table of contents in the middle of an object's entry);
* a paragraph laid out in aligned columns (a reST simple table, or a "name   what it holds" listing) is
  kept as preformatted text, which is what its author saw.

Loaded by mkdocstrings (``mkdocs.yml``: ``extensions: [tools/docs/griffe_rst.py]``); griffe reads the sources
statically, so building the site imports neither portacnn nor any optional backend.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|mod|meth|data|attr|exc|obj):`(~?)([^`]+)`")
UNDERLINE = re.compile(r"^(-{3,}|={3,})\s*$")
ALIGNED = re.compile(r"\S {3,}\S")  # two words with a run of 3+ spaces between them: a column gap
FENCE = re.compile(r"^\s*(```|~~~)")
# a line of prose, token by token: a role, a code span (any number of backticks), or other text
PROSE = re.compile(r"(?P<role>" + ROLE.pattern + r")|(?P<code>(?P<ticks>`+).+?(?<!`)(?P=ticks)(?!`))|(?P<text>[^`:]+|.)")


def _target(obj: griffe.Object, name: str) -> str:
    """The dotted path a role's target names, resolved the way Sphinx would from ``obj``'s scope."""
    name = name.strip().rstrip("()")
    if name.startswith("."):  # relative to the current package: ".rules", "..backend.Backend"
        module = obj.module
        base = module.path if module.is_init_module else module.parent.path
        dots = len(name) - len(name.lstrip("."))
        parts = base.split(".")
        if dots > 1:
            parts = parts[: len(parts) - (dots - 1)]
        return ".".join(parts + [name.lstrip(".")])
    if "." in name and name.split(".")[0] == "portacnn":
        return name
    head, _, rest = name.partition(".")
    for scope in (obj, obj.parent, obj.module):  # a member of the class, of the module, or imported there
        if scope is None:
            continue
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            continue
        return f"{path}.{rest}" if rest else path
    return name


def _roles(obj: griffe.Object, text: str, link: bool) -> str:
    """``text`` with its roles replaced: by links (``link``) or by the plain names (in preformatted text). In
    a line of prose, a ``<`` outside code is escaped too: the docstrings write ``"<layer index>.weight"`` and
    mean the characters, not an HTML tag."""

    def role(m: re.Match) -> str:
        tilde, name = m.group(1), m.group(2)
        shown = name.split(".")[-1] if tilde else name.lstrip(".")
        if not link:
            return shown
        ident = _target(obj, name)
        return f'<autoref identifier="{html.escape(ident)}" optional><code>{html.escape(shown)}</code></autoref>'

    if not link:
        return ROLE.sub(role, text)

    def token(m: re.Match) -> str:
        if m.group("role"):
            return role(ROLE.match(m.group("role")))
        if m.group("code"):
            return m.group("code")
        return m.group("text").replace("<", "&lt;")

    return PROSE.sub(token, text)


def _paragraphs(lines: list[str]) -> list[list[str]]:
    blocks, current = [], []
    for line in lines:
        if line.strip():
            current.append(line)
        else:
            if current:
                blocks.append(current)
            blocks.append([line])
            current = []
    if current:
        blocks.append(current)
    return blocks


def to_markdown(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with the reST habits above turned into Markdown."""
    out = []
    in_fence = False
    for block in _paragraphs(text.splitlines()):
        if not block[0].strip():
            out.append("")
            continue
        if any(FENCE.match(line) for line in block):  # leave fenced code alone (toggle on odd fence counts)
            out.extend(block)
            if sum(bool(FENCE.match(line)) for line in block) % 2:
                in_fence = not in_fence
            continue
        if in_fence:
            out.extend(block)
            continue
        indented = all(line.startswith("    ") for line in block)
        if indented:  # a literal block: a Markdown code block as it stands (roles shown as names)
            out.extend(_roles(obj, line, link=False) for line in block)
            continue
        gaps = sum(bool(ALIGNED.search(line.strip())) for line in block)
        if len(block) >= 2 and gaps >= 2:  # aligned columns: keep the author's layout
            out.append("```text")
            out.extend(_roles(obj, line, link=False).replace("``", "") for line in block)
            out.append("```")
            continue
        lines = list(block)
        k = 0
        while k < len(lines):
            if k + 1 < len(lines) and UNDERLINE.match(lines[k + 1]) and lines[k].strip():
                lines[k : k + 2] = [f"**{lines[k].strip()}**", ""]
            k += 1
        if lines and lines[-1].rstrip().endswith("::"):
            stripped = lines[-1].rstrip()[:-2].rstrip()
            lines[-1] = (stripped + ":") if stripped else ""
        out.extend(_roles(obj, line, link=True) for line in lines)
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring of the loaded package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen = set()

        def visit(obj) -> None:
            if obj.is_alias or id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj, obj.docstring.value)
            for member in obj.members.values():
                visit(member)

        visit(pkg)
