"""MkDocs hooks for the documentation site (``mkdocs.yml``: ``hooks: [tools/docs/hooks.py]``).

The command-line synopsis has one home, the first code block under ``## Command line`` in README.md, which
tests/test_readme.py checks against the parser. A page that writes the line ``<!-- synopsis from README -->``
gets that block in its place when the site is built, so the site never holds a second copy to drift.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

MARKER = "<!-- synopsis from README -->"
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_synopsis(readme: Path = README) -> str:
    """The first fenced code block under ``## Command line`` in ``readme``, fences included."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Command line")
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    fences = [k for k in range(start + 1, end) if lines[k].startswith("```")]
    if len(fences) < 2:
        raise ValueError(f"{readme}: no code block under '## Command line'")
    return "\n".join(lines[fences[0] : fences[1] + 1])


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, readme_synopsis())


# -- links in the notebook --------------------------------------------------------------------------------
# MkDocs resolves the .md links of Markdown pages; a notebook is turned into HTML by mkdocs-jupyter, whose
# links stay as written. The tutorial links to pages as "guide/models.md#..." (which also works when the
# notebook is opened in Jupyter next to the pages); here they become the site's URLs, and a link to a page
# that does not exist is a warning, which fails the strict build.
log = logging.getLogger("mkdocs.hooks.portacnn")
MD_LINK = re.compile(r'href="(?![a-zA-Z][\w+.-]*:|#|/)([^"#?]+\.md)(#[^"]*)?"')


def on_page_content(html: str, page, config, files) -> str:
    if not page.file.src_uri.endswith(".ipynb"):
        return html

    def resolve(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m.group(1)))
        found = files.get_file_from_path(target)
        if found is None:
            log.warning("%s: link to %r, which is not a page of the site", page.file.src_uri, m.group(1))
            return m.group(0)
        return f'href="{found.url_relative_to(page.file)}{m.group(2) or ""}"'

    return MD_LINK.sub(resolve, html)
