"""A benchmark's result as a table in docs/benchmarks/<name>.md, with the machine and versions that made it.

    from record import record
    record("train", "Training with every step logged", rows, target="lrscan logged >= 2.0x the seed's bare loop")

Every bench script ends with one call, so the tables the documentation shows (docs/benchmarks.md includes every
file of docs/benchmarks/ when the site builds) are what `make bench` printed last, never typed by hand. A table
says which command made it, on which machine (platform, cores), with which lrscan, torch, wandb and Python; no date
and no load (the docs carry no history): the load average before and after is printed beside the table's path, for
whoever reports the figure to say it. Written to a temp file and renamed, so a failed run leaves the last one.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

TABLES = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
# the load average when the benchmark module was imported, i.e. before the measurement started
_LOAD_AT_START = os.getloadavg()


def versions() -> dict[str, str]:
    """The installed versions that matter for a figure: lrscan, torch, wandb, Python."""
    out = {}
    for name in ("lrscan", "torch", "wandb"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def machine() -> str:
    """One line: the platform, the processor and the number of cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processor = platform.processor() or platform.machine()
    return f"{platform.system()} {platform.release()}, {processor}, {cores} cores"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """rows (dicts with the same keys, in column order) as a Markdown table."""
    if not rows:
        raise ValueError("a benchmark table needs at least one row")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def render(title: str, rows: Sequence[Mapping[str, object]], *, target: str | None, note: str | None,
           command: str, machine_line: str, version_map: Mapping[str, str]) -> str:
    """The table's Markdown: title, target, rows, then where and with what it was measured (pure: tests call it)."""
    parts = [f"### {title}", ""]
    if target:
        parts += [f"Target: {target}.", ""]
    parts += [markdown_table(rows), ""]
    if note:
        parts += [note, ""]
    parts += [
        f"Measured by `{command}`; machine: {machine_line}; "
        + ", ".join(f"{k} {v}" for k, v in version_map.items()) + ".",
        "",
    ]
    return "\n".join(parts)


def record(name: str, title: str, rows: Sequence[Mapping[str, object]], *, target: str | None = None,
           note: str | None = None, tables: Path = TABLES) -> Path:
    """Write docs/benchmarks/<name>.md (replacing the last one) and return its path; also print where it went."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    text = render(title, rows, target=target, note=note, command=command, machine_line=machine(),
                  version_map=versions())
    tables.mkdir(parents=True, exist_ok=True)
    path = tables / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    load = lambda values: " / ".join(f"{v:.1f}" for v in values)  # noqa: E731
    print(f"table written: {path} (load average 1/5/15 min: {load(_LOAD_AT_START)} before, {load(os.getloadavg())} "
          f"after)")
    return path
