"""The layout is the architecture: imports point one way, one room per stage, each file says its job.

    pipeline/{config,keys,errors,fsutil,runlog/,yamlfile,packing}.py  the contract both halves share
    pipeline/train/   one run           (imports the contract only)
    pipeline/sweep/   many runs         (imports the contract only; launches the trainer as a process)
    pipeline/pack/    many runs stacked in one process (imports the trainer and the contract)
    analysis/         reads runs        (imports the contract only)
    pipeline/study/   the whole study   (the only room that imports both halves)
    lrscan/           the facade above everything: `import lrscan`, the `lrscan` command, `lrscan.find`
                      (may import pipeline and analysis; nothing below imports it)

The package facade (pipeline/__init__.py, part of the contract) re-exports the Python API on your own
model, `pipeline.Task` and `pipeline.range_test`, loaded on first use (PEP 562): it may import those
two modules inside functions only, so `import pipeline` (which the analysis does) stays light.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CONTRACT = {"pipeline", "pipeline.config", "pipeline.keys", "pipeline.errors", "pipeline.fsutil", "pipeline.runlog",
            "pipeline.runlog.framing", "pipeline.runlog.history", "pipeline.runlog.reader", "pipeline.runlog.parallel",
            "pipeline.runlog.wire", "pipeline.runlog.items", "pipeline.yamlfile", "pipeline.packing"}
# room -> the first-party modules it may import besides its own room and the contract
ALLOWED = {
    "contract": set(),
    "pipeline.train": set(),
    "pipeline.sweep": set(),
    "pipeline.pack": {"pipeline.train"},
    "analysis": set(),
    "pipeline.study": {"pipeline.train", "pipeline.sweep", "pipeline.pack", "analysis"},  # range_test packs its seeds
    "lrscan": {"pipeline.train", "pipeline.sweep", "pipeline.pack", "pipeline.study", "analysis"},  # the facade
}
# what the facade may import lazily (inside a function), and nothing else from above the contract
FACADE, FACADE_LAZY = "pipeline", {"pipeline.train.task", "pipeline.study.range_test", "pipeline.study.prove_api"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str:
    if module in CONTRACT:
        return "contract"
    if module == "lrscan" or module.startswith("lrscan."):
        return "lrscan"
    for room in ("pipeline.train", "pipeline.sweep", "pipeline.pack", "pipeline.study", "analysis"):
        if module == room or module.startswith(room + "."):
            return room
    raise AssertionError(f"{module} is in no room: add it to one (tests/test_layout.py)")


def first_party_imports(path: Path, *, in_functions: bool | None = None) -> set[str]:
    """The first-party names `path` imports; in_functions=True/False: only those inside/outside function bodies."""
    tree = ast.parse(path.read_text())
    in_a_function = {id(inner) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                     for inner in ast.walk(fn) if inner is not fn}
    out = set()
    for node in ast.walk(tree):
        if in_functions is not None and (id(node) in in_a_function) != in_functions:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        # the code is imported as lrscan.pipeline... / lrscan.analysis... (the wheel installs only `lrscan`)
        names = [n.removeprefix("lrscan.") for n in names if n.startswith("lrscan.")]
        out |= {n for n in names if n.split(".")[0] in ("pipeline", "analysis")}
    return out


def import_target(name: str) -> str:
    # `from lrscan.pipeline.train import checkpoint` names pipeline.train.checkpoint: judge the longest real one
    return name if (REPO / (name.replace(".", "/") + ".py")).is_file() or (REPO / name.replace(".", "/")).is_dir() \
        else name.rsplit(".", 1)[0]


SOURCES = sorted(p for top in ("pipeline", "analysis", "lrscan") for p in (REPO / top).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_one_way(path: Path) -> None:
    room = room_of(module_name(path))
    allowed = ALLOWED[room] | {"contract"} | ({room} if room != "contract" else set())
    lazy = {import_target(n) for n in first_party_imports(path, in_functions=True)} if module_name(path) == FACADE \
        else set()
    wrong = set()
    for name in first_party_imports(path):
        target = import_target(name)
        if room_of(target) not in allowed and not (target in FACADE_LAZY and target in lazy):
            wrong.add(target)
    assert not wrong, f"{module_name(path)} ({room}) imports {sorted(wrong)}"


def test_the_facade_imports_the_api_lazily_and_stays_light() -> None:
    """`import pipeline` and the analysis never load torch; `pipeline.Task`, `pipeline.range_test` load on use."""
    facade = REPO / "pipeline" / "__init__.py"
    eager = {import_target(n) for n in first_party_imports(facade, in_functions=False)}
    assert not eager & FACADE_LAZY, f"pipeline/__init__.py imports {sorted(eager & FACADE_LAZY)} at import time"
    code = ("import sys\nfrom lrscan import pipeline, analysis\n"
            "import lrscan.analysis.pick, lrscan.analysis.plots, lrscan.analysis.report, lrscan.analysis.sources\n"
            "assert 'torch' not in sys.modules, 'torch loaded by import pipeline/analysis'\n"
            "from lrscan.pipeline import Task, range_test\n"
            "import lrscan.pipeline.study.range_test, lrscan.pipeline.train.task\n"
            "assert Task is pipeline.train.task.Task and range_test is pipeline.study.range_test.range_test\n"
            "assert not hasattr(pipeline, 'no_such_name')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


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
        if rel.parts[0] not in ("pipeline", "analysis", "examples", "lrscan") or rel.as_posix() in INTEGRATION_TESTS:
            continue
        module = REPO / rel.parent / rel.stem.removeprefix("test_")
        main = REPO / rel.parent / "__main__.py"
        notebook = module.with_suffix(".ipynb").is_file()  # examples/range_test.ipynb, run by its test
        if not (module.with_suffix(".py").is_file() or module.is_dir() or notebook
                or (rel.stem == "test_main" and main.is_file())):
            lonely.append(rel.as_posix())
    assert not lonely, f"tests without their module: {lonely}"


def test_no_import_circles() -> None:
    """No two modules import each other, directly or round a loop, even inside functions (a deferred import hides a
    circle from Python, not from the reader): the circles found, each as its modules."""
    modules = {module_name(p): p for p in SOURCES}
    edges = {m: set() for m in modules}
    for m, path in modules.items():
        for name in first_party_imports(path):
            target = import_target(name)
            if target in modules and target != m and modules[target].name != "__init__.py":
                edges[m].add(target)
    # Tarjan's strongly connected components: a component of more than one module is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    new = [c for c in circles if c not in CIRCLES_LEFT]
    assert not new, f"import circles: {new}"


# circles known and still to break (none: any circle fails this test)
CIRCLES_LEFT: list[list[str]] = []


def facade_imports(path: Path) -> set[str]:
    """The lrscan facade's own modules (lrscan, lrscan.cli, lrscan.lrfind, ...) that `path` imports."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if (n == "lrscan" or n.startswith("lrscan."))
            and n.removeprefix("lrscan.").split(".")[0] not in ("pipeline", "analysis")}


@pytest.mark.parametrize("path", [p for p in SOURCES if p.relative_to(REPO).parts[0] != "lrscan"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_below_imports_the_facade(path: Path) -> None:
    assert not facade_imports(path), f"{path.relative_to(REPO)} imports {sorted(facade_imports(path))}"


def test_the_api_names_load_on_use_each_with_its_reference() -> None:
    """`import lrscan` loads neither torch nor wandb; every name in lrscan.__all__ resolves and has a docstring
    (the API reference is built from them)."""
    code = ("import sys, lrscan\n"
            "assert 'torch' not in sys.modules and 'wandb' not in sys.modules\n"
            "missing = [n for n in lrscan.__all__ if not (getattr(lrscan, n).__doc__ or '').strip()]\n"
            "assert not missing, missing\n"
            "assert callable(lrscan.find) and lrscan.find.__module__ == 'lrscan.lrfind'\n"
            "assert not hasattr(lrscan, 'no_such_name')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
