"""The documentation as a user meets it: README's and docs/'s code blocks run as written, every page is in the site.

A `bash` or `python` block runs unless an HTML comment on the line above says why not:

    <!-- docs-test: skip (needs a W&B account and the network) -->
    <!-- docs-test: slow (4 range tests and their analysis: a minute on 2 cores) -->

A page's Python blocks run in order in one interpreter (a later block may use an earlier one's names); each
shell block runs on its own, under `bash -eu` (no pipefail: `cmd --help | head` is a fine thing to paste). Both run
in a fresh folder holding `examples/` and `sweeps/` (links to the
checkout's) with the word list at hand and W&B offline, so the blocks read as a user would paste them. Pages
whose blocks make the same script (README's and the quickstart's) run it once per suite run (tests/support/once.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED_NAMES
from tests.support.once import made_once

# docs/pypi.md is the package's long description, README's blocks again
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "pypi.md")]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
MARK = re.compile(r"<!-- docs-test: (skip|slow|run)(?: \((.+)\))? -->$")
RUNNABLE = {"bash": "shell", "sh": "shell", "python": "python"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    kind: str  # "shell" or "python"
    code: str
    mark: str  # "", "skip", "slow" or "run"
    reason: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The page's bash and python blocks, with the docs-test mark on the line above each (if any)."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        kind = RUNNABLE.get(m.group(1))
        if kind is None:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        mark = MARK.match(before)
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, kind, m.group(2),
                         mark.group(1) if mark else "", (mark.group(2) or "") if mark else ""))
    return out


ALL = [b for page in PAGES for b in blocks(page)]


def test_every_mark_is_well_formed_and_every_skip_says_why():
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if "docs-test" in line:
                mark = MARK.match(line.strip())
                assert mark, f"{page.name}:{number}: not a docs-test mark: {line}"
                assert mark.group(1) == "run" or len(mark.group(2) or "") > 10, \
                    f"{page.name}:{number}: a {mark.group(1)} mark says why in parentheses"
    assert sum(b.mark != "skip" for b in ALL) >= 8  # most blocks run


def _names() -> Path:
    for path in (REPO / "data" / "names.txt", SHARED_NAMES):
        if path.is_file():
            return path
    pytest.skip("no names.txt here (make data puts it in data/)")


def _folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh folder as a user's, and the environment the blocks run in."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "sweeps"):
        (work / name).symlink_to(REPO / name)
    names = _names()
    (work / "data").mkdir()
    (work / "data" / "names.txt").symlink_to(names)
    env = {**os.environ, "LRSCAN_DATA": str(names), "WANDB_DIR": str(work), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    return work, env


def _params(kind: str) -> list:
    chosen = [b for b in ALL if b.kind == kind]
    if kind == "python":  # one interpreter per page: the page's blocks in order
        pages = {}
        for b in chosen:
            pages.setdefault(b.page, []).append(b)
        chosen = [blocks_of_page for blocks_of_page in pages.values()]
    scripts = Counter(_script(item) for item in chosen if isinstance(item, list))
    params = []
    for item in chosen:
        group = item if isinstance(item, list) else [item]
        marks = {b.mark for b in group}
        first = group[0]
        if marks == {"skip"}:
            marks_ = [pytest.mark.skip(reason="; ".join(b.reason for b in group))]
        else:
            marks_ = [pytest.mark.slow] if "slow" in marks else []
            if kind == "python" and scripts[_script(group)] > 1:  # on one worker: the second reads the first's run
                marks_.append(pytest.mark.xdist_group(_script_name(group)))
        params.append(pytest.param(group, id=first.id, marks=marks_))
    return params


def _script(group: list[Block]) -> str:
    """What a page's Python blocks run as: one script, the skipped blocks left out."""
    return "\n\n".join(b.code for b in group if b.mark != "skip")


def _script_name(group: list[Block]) -> str:
    return "docs-script-" + hashlib.sha256(_script(group).encode()).hexdigest()[:12]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("group", _params("shell"))
def test_shell_block_runs(group, tmp_path):
    [block] = group
    work, env = _folder(tmp_path)
    done = subprocess.run(["bash", "-eu", "-c", block.code], cwd=work, env=env, capture_output=True,
                          text=True, timeout=1100)
    assert done.returncode == 0, f"{block.id}:\n{block.code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("group", _params("python"))
def test_python_blocks_of_a_page_run(group, request, tmp_path_factory):
    # pages whose blocks are the same script (README's and the quickstart's) run it once per suite run: the same
    # code in the same fresh folder and environment, so one run answers for both
    def run(folder: Path) -> dict[str, Path]:
        work, env = _folder(folder)
        script = work / "page.py"
        script.write_text(_script(group))
        done = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=1100)
        result = folder / "result.json"
        result.write_text(json.dumps({"returncode": done.returncode, "stdout": done.stdout[-3000:],
                                      "stderr": done.stderr[-3000:]}))
        return {"result": result}

    done = json.loads(made_once(request, tmp_path_factory, _script_name(group), run)["result"].read_text())
    assert done["returncode"] == 0, f"{group[0].id}:\n{done['stdout']}\n{done['stderr']}"


def _nav_pages(nav) -> set[str]:
    out = set()
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out |= _nav_pages(value) if isinstance(value, list) else {value}
    return out


def _mkdocs() -> dict:
    # mkdocs.yml's !!python tags, if any, are not needed here: read it as plain YAML
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def test_every_page_under_docs_is_in_the_nav_and_every_nav_entry_exists():
    config = _mkdocs()
    excluded = [p.strip().strip("/") for p in config.get("exclude_docs", "").splitlines() if p.strip()]
    pages = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    pages = {p for p in pages if not any(p == e or p.startswith(e.rstrip("/") + "/") for e in excluded)}
    nav = _nav_pages(config["nav"])
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert {p for p in nav if not (REPO / "docs" / p).is_file()} == set(), "nav entries without a page"


def test_readme_is_a_front_page_without_a_diary():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 260
    diary = re.findall(r"20\d\d-\d\d-\d\d|load average|[Ii]ssue \d+|[Ss]ession|engineers?\b", readme)
    assert diary == []
    # the links into the docs and the figure exist
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).is_file(), target
    # the first Python block after the two commands is the quickstart's first
    first = next(b for b in blocks(REPO / "README.md") if b.kind == "python")
    quick = next(b for b in blocks(REPO / "docs" / "quickstart.md") if b.kind == "python")
    assert first.code == quick.code


def test_the_long_description_has_no_relative_images_or_links():
    """pyproject's readme is what the package index shows: a relative image or link there is broken."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    text = (REPO / project["readme"]).read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert target.startswith("https://"), target
    assert "<img" not in text
    # its example is README's
    readme_first = next(b for b in blocks(REPO / "README.md") if b.kind == "python")
    assert readme_first.code in text


def test_the_benchmarks_page_includes_every_recorded_table():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import mkdocs_tables
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    page = (REPO / "docs" / "benchmarks.md").read_text()
    assert mkdocs_tables.MARKER in page
    html = mkdocs_tables.on_page_markdown(page, None, {"docs_dir": str(REPO / "docs")}, None)
    for table in (REPO / "docs" / "benchmarks").glob("*.md"):
        assert table.read_text() in html
