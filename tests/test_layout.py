"""The layout is the architecture: imports point one way, one room per stage, each file says its job.

    pipeline/{config,keys,errors,fsutil,runlog,yamlfile}.py   the contract both halves share
    pipeline/train/   one run           (imports the contract only)
    pipeline/sweep/   many runs         (imports the contract only; launches the trainer as a process)
    analysis/         reads runs        (imports the contract only)
    pipeline/study/   the whole study   (the only room that imports both halves)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

CONTRACT = {"pipeline", "pipeline.config", "pipeline.keys", "pipeline.errors", "pipeline.fsutil", "pipeline.runlog",
            "pipeline.yamlfile"}
# room -> the first-party modules it may import besides its own room and the contract
ALLOWED = {
    "contract": set(),
    "pipeline.train": set(),
    "pipeline.sweep": set(),
    "analysis": set(),
    "pipeline.study": {"pipeline.train", "pipeline.sweep", "analysis"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str:
    if module in CONTRACT:
        return "contract"
    for room in ("pipeline.train", "pipeline.sweep", "pipeline.study", "analysis"):
        if module == room or module.startswith(room + "."):
            return room
    raise AssertionError(f"{module} is in no room: add it to one (tests/test_layout.py)")


def first_party_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in ("pipeline", "analysis")}
    return out


SOURCES = sorted(p for top in ("pipeline", "analysis") for p in (REPO / top).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_one_way(path: Path) -> None:
    room = room_of(module_name(path))
    allowed = ALLOWED[room] | {"contract"} | ({room} if room != "contract" else set())
    wrong = set()
    for name in first_party_imports(path):
        # `from pipeline.train import checkpoint` names the module pipeline.train.checkpoint: judge the longest real one
        target = name if (REPO / (name.replace(".", "/") + ".py")).is_file() or (REPO / name.replace(".", "/")).is_dir() \
            else name.rsplit(".", 1)[0]
        if room_of(target) not in allowed:
            wrong.add(target)
    assert not wrong, f"{module_name(path)} ({room}) imports {sorted(wrong)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_file_opens_with_what_it_is_for(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and doc.splitlines()[0].strip(), f"{path.relative_to(REPO)}: no opening docstring line"


# tests that exercise a room's parts together rather than one module
INTEGRATION_TESTS = {"pipeline/sweep/test_agent.py", "pipeline/sweep/test_sweep_train.py"}


def test_tests_mirror_the_modules() -> None:
    lonely = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        rel = path.relative_to(REPO / "tests")
        if rel.parts[0] not in ("pipeline", "analysis") or rel.as_posix() in INTEGRATION_TESTS:
            continue
        module = REPO / rel.parent / rel.stem.removeprefix("test_")
        main = REPO / rel.parent / "__main__.py"
        if not (module.with_suffix(".py").is_file() or module.is_dir() or (rel.stem == "test_main" and main.is_file())):
            lonely.append(rel.as_posix())
    assert not lonely, f"tests without their module: {lonely}"
