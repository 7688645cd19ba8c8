"""MkDocs hook: the benchmarks page shows every table benchmarks/record.py wrote to docs/benchmarks/.

mkdocs.yml names this file under `hooks:` and leaves docs/benchmarks/ out of the pages (`exclude_docs`), so a new
bench script's table appears on the page without anyone typing it or a nav entry.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "<!-- benchmark tables -->"


def tables_markdown(folder: Path) -> str:
    """Every table in `folder`, by file name; a line saying how to make them where there are none."""
    files = sorted(folder.glob("*.md"))
    if not files:
        return "No table has been recorded in this tree yet: `make bench` writes them."
    return "\n".join(f.read_text() for f in files)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (MkDocs' hook signature)
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, tables_markdown(Path(config["docs_dir"]) / "benchmarks"))
