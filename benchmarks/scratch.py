"""A benchmark's scratch folder under the temp dir, removed when the benchmark exits (done, failed or Ctrl-C)."""

from __future__ import annotations

import atexit
import shutil
import tempfile


def scratch_dir(prefix: str) -> str:
    """A new empty folder; removed at interpreter exit, so a benchmark run leaves nothing in /tmp behind."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
