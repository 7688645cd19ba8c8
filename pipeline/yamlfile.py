"""Reading a YAML file into a mapping: the one reader for sweep files, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from lrscan.pipeline.errors import LrscanError


def read_yaml_mapping(path: str | os.PathLike, what: str = "sweep file") -> dict[str, Any]:
    """The top-level mapping of a YAML file; LrscanError naming the file and the cause otherwise."""
    return read_yaml_text_and_mapping(path, what)[1]


def read_yaml_text_and_mapping(path: str | os.PathLike, what: str = "sweep file") -> tuple[str, dict[str, Any]]:
    """The file's text (kept verbatim, e.g. beside a sweep's runs) and its top-level mapping.

    `what` names the file in messages ("sweep file", "base sweep YAML"): a user sees which of their
    files is wrong, where, and why, in one line.
    """
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise LrscanError(f"cannot read {what} {path!r}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise LrscanError(f"{what} {path!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise LrscanError(f"{path}: not valid YAML{at}: {problem}") from None
    if not isinstance(loaded, dict) or not loaded:
        raise LrscanError(f"{path}: expected a mapping (a {what}), got {type(loaded).__name__}")
    return text, loaded
