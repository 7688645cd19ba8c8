"""The report folder: replaced only when this command wrote it, swapped in one step, checked before the analysis."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from pathlib import Path

from lrscan.pipeline.errors import LrscanError

# written last into every report folder: what wrote it and which files are its own
MARKER_FILE = ".lrscan-report.json"


def check_out_dir(out_dir: str | os.PathLike) -> None:
    """LrscanError unless a report can go to `out_dir`; cheap, so callers check before the analysis.

    It can when `out_dir` does not exist or is empty, or is a report `write_report` wrote (its
    marker lists its files) with nothing added: replacing it then loses nothing. A folder without
    the marker (a study's ``report/`` holding ``range/`` and ``decay/``, anything of the user's) is
    never replaced. And the nearest existing folder above it must take a new folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LrscanError(f"--out {str(out_dir)!r} is a file, not a folder")
    if out_dir.is_dir():
        entries = sorted(p.name for p in out_dir.iterdir())
        if entries:
            own = own_files(out_dir)
            if own is None:
                folders = [e for e in entries if (out_dir / e).is_dir()]
                held = f"holds folders ({', '.join(folders[:3])})" if folders else "holds files"
                raise LrscanError(f"--out {str(out_dir)!r} {held} that this command did not write (no {MARKER_FILE}); "
                                  f"give a new or empty folder")
            added = [e for e in entries if e != MARKER_FILE and (e not in own or (out_dir / e).is_dir())]
            if added:
                raise LrscanError(f"--out {str(out_dir)!r} is an earlier report with {', '.join(added[:3])} added, "
                                  f"which replacing it would delete; give a new folder or move them out")
    _check_writable(out_dir)


def own_files(out_dir: Path) -> set[str] | None:
    """The files a report folder's marker names, or None when it has no readable marker."""
    try:
        marker = json.loads((out_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def _check_writable(out_dir: Path) -> None:
    """The nearest existing folder above `out_dir` takes a new folder (tried for real: permission bits
    do not tell for root, read-only mounts or /proc)."""
    above = out_dir.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise LrscanError(f"--out {str(out_dir)!r}: {above} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lrscan-probe-", dir=above))
    except OSError as e:
        raise LrscanError(f"--out {str(out_dir)!r}: cannot write in {above} ({e.strerror or e})") from None


def staging_dir(out_dir: Path) -> tuple[Path, Path]:
    """(the folder above `out_dir`, made if needed; a new private folder beside `out_dir` to write the report into)."""
    parent = out_dir.absolute().parent.resolve()
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LrscanError(f"--out {str(out_dir)!r}: cannot create its folder ({e.strerror})") from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise LrscanError(f"--out {str(out_dir)!r}: cannot write in {parent} ({e.strerror or e})") from None
    return parent, tmp


def replace_dir(new: Path, out_dir: Path) -> None:
    """Put the folder `new` at `out_dir` in one step; an earlier report there is swapped out, then removed.

    On Linux the two folders trade places atomically (renameat2 RENAME_EXCHANGE): a reader finds
    the old report or the new one, never no folder. Where the system cannot swap, the old report
    is renamed aside just before the new one takes its place.
    """
    new.chmod(0o755)  # mkdtemp made it private
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        os.replace(new, out_dir)  # onto nothing or an empty folder: one rename
        return
    if _exchange(new, out_dir):
        shutil.rmtree(new, ignore_errors=True)  # `new` holds the old report now
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    os.replace(new, out_dir)
    shutil.rmtree(old, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux >= 3.15, glibc >= 2.28); False where that did not happen."""
    try:
        renameat2 = ctypes.CDLL(None).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    # any failure (EINVAL: a filesystem that cannot swap, ENOSYS: an old kernel) leaves both in place
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
