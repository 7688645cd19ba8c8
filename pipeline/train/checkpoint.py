"""Atomic checkpoints: weights, next step, stop-rule state, vocabulary and the wandb run id.

Written with `pipeline.fsutil.atomic_file` (a temporary file, fsynced, renamed over the old one), so
a kill at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_file

FORMAT_VERSION = 1


def ckpt_path(ckpt_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(ckpt_dir) / f"{run_id}.pt"


def make_dir(ckpt_dir: str | os.PathLike) -> None:
    """Create the checkpoint folder, or say in one line why it cannot hold checkpoints (before any run exists)."""
    try:
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LrscanError(f"ckpt_dir={str(ckpt_dir)!r}: cannot create it ({e.strerror})") from None
    if not os.access(ckpt_dir, os.W_OK):
        raise LrscanError(f"ckpt_dir={str(ckpt_dir)!r}: not writable")


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    with atomic_file(path, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)


def load(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`. mmap=True maps the weights instead of reading them: cheap for a look
    at the config and step of many checkpoints."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated or foreign file: say which, do not guess
        raise LrscanError(f"checkpoint {str(path)!r} cannot be read: {e}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise LrscanError(f"checkpoint {str(path)!r} is not an lrscan checkpoint of format {FORMAT_VERSION}")
    return state


def load_all(ckpt_dir: str | os.PathLike) -> list[tuple[Path, dict[str, Any] | LrscanError]]:
    """Every checkpoint in a folder, by name, each with its state (weights mapped, not read) or the
    error that kept it from being read; for `--resume` without a run id, which must choose among them."""
    found = []
    for path in sorted(Path(ckpt_dir).glob("*.pt")):
        try:
            found.append((path, load(path, mmap=True)))
        except LrscanError as e:
            found.append((path, e))
    return found
