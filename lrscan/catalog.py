"""The sweep YAMLs lrscan ships, by name: their one-line questions, their paths, and a copy to edit.

    from lrscan.catalog import shipped_sweeps, sweep_path, export_sweep
    shipped_sweeps()                          # [ShippedSweep(name="decay_grid", question="...", path=...), ...]
    sweep_path("lr_range")                    # the installed file (`lrscan sweep lr_range` runs it)
    export_sweep("lr_range", "my_range.yaml") # a copy to edit and hand to `wandb sweep` or `lrscan sweep`

The files travel inside the package (lrscan/pipeline/study/yamls, package data), so an installed
lrscan reaches them from any folder; a checkout's sweeps/ links to the same folder. A sweep's
question is the first line of the file when it reads `# Question: ...`, else its `description`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text

QUESTION = "# Question"


@dataclass(frozen=True)
class ShippedSweep:
    """A sweep YAML lrscan ships: its name (the file's stem), the question it answers, its installed path."""

    name: str
    question: str
    path: Path


def yamls_folder() -> Path:
    """Where the shipped sweep YAMLs are installed (in a checkout: pipeline/study/yamls, which sweeps/ links to)."""
    return Path(str(resources.files("lrscan.pipeline.study") / "yamls"))


def shipped_sweeps() -> list[ShippedSweep]:
    """Every shipped sweep, by name."""
    out = []
    for path in sorted(yamls_folder().glob("*.yaml")):
        text = path.read_text()
        first = text.splitlines()[0] if text else ""
        if first.startswith(QUESTION):
            question = first.partition(":")[2].strip()
        else:
            config = yaml.safe_load(text) or {}
            question = str(config.get("description", "")) if isinstance(config, dict) else ""
        out.append(ShippedSweep(name=path.stem, question=question, path=path))
    return out


def sweep_path(name: str) -> Path:
    """The installed file of the shipped sweep `name` ("lr_range" or "lr_range.yaml"); an LrscanError naming the
    shipped ones when there is none."""
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    path = yamls_folder() / f"{stem}.yaml"
    if stem and os.sep not in stem and "/" not in stem and path.is_file():
        return path
    names = ", ".join(s.name for s in shipped_sweeps())
    raise LrscanError(f"{name!r} is neither a sweep file nor a sweep lrscan ships (shipped: {names}; "
                      f"`lrscan sweep --list` shows their questions)")


def export_sweep(name: str, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Copy the shipped sweep `name` to `dest` (a file, or a folder to put `<name>.yaml` in), to edit and run
    with `wandb sweep DEST` or `lrscan sweep DEST`. An existing file is kept unless `overwrite`."""
    source = sweep_path(name)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.suffix not in (".yaml", ".yml"):
        raise LrscanError(f"--export {dest}: a sweep file ends in .yaml (e.g. --export {source.name})")
    if dest.exists() and not overwrite:
        raise LrscanError(f"--export {dest}: the file exists; choose another name or remove it first")
    if not dest.parent.is_dir():
        raise LrscanError(f"--export {dest}: no folder {dest.parent}")
    atomic_write_text(dest, source.read_text())
    return dest
