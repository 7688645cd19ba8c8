"""Many wandb transaction logs read at once: one worker process per core, each reading whole files.

Reading is CPU-bound pure Python (framing.scan) and regex/NumPy work (history), ~1-2 s per 200k-step
file: files are dealt to fresh interpreters (`python -c`, importing only this package: numpy, and wandb's
protobuf classes only for a history record the fast path cannot read; ~50 MiB each, never the caller's
pandas or main module), biggest first
to the least loaded, and each hands back only the keys its runs logged, pickled to a temporary
folder. A worker that dies leaves its unread files as errors, not a hang.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog.reader import RunFile, read_logged

READ_WORKER = "from lrscan.pipeline.runlog.parallel import read_worker_main; read_worker_main()"
# files this big in all are read by worker processes in parallel: ~2.5 s of run files per start-up of one
PARALLEL_READ_BYTES = 48 * 2**20
# arrays this big or bigger get a memory mapping of their own (map_big_arrays_alone)
OWN_MAPPING_BYTES = 256 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def read_files(files: Sequence[str | os.PathLike], keys: Sequence[str] | None,
               workers: int | None = None) -> list[RunFile | LrscanError]:
    """Each file read (`read_logged`, in order), by `workers` processes (None: as many as this process
    may use cores, when the files are big enough to pay for starting them; 1: in this process)."""
    files = [Path(os.fspath(f)) for f in files]
    keys = list(keys) if keys is not None else None
    if workers is None:
        big = sum(_size_bytes(f) for f in files) >= PARALLEL_READ_BYTES
        workers = min(len(os.sched_getaffinity(0)), len(files)) if big else 1
    if workers <= 1 or len(files) < 2:
        return [read_logged(f, keys) for f in files]
    # the files dealt to the workers biggest first, each to the least loaded: even shares of bytes
    shares: list[list[tuple[int, str]]] = [[] for _ in range(min(workers, len(files)))]
    loads = [0] * len(shares)
    for i in sorted(range(len(files)), key=lambda i: -_size_bytes(files[i])):
        least = loads.index(min(loads))
        shares[least].append((i, str(files[i])))
        loads[least] += _size_bytes(files[i])
    with tempfile.TemporaryDirectory(prefix="lrscan-read-") as out_dir:
        procs = []
        for share in shares:
            proc = subprocess.Popen([sys.executable, "-c", READ_WORKER], stdin=subprocess.PIPE)
            proc.stdin.write(pickle.dumps((out_dir, keys, share)))
            proc.stdin.close()
            procs.append(proc)
        codes = [proc.wait() for proc in procs]
        out: list[RunFile | LrscanError] = []
        for i, file in enumerate(files):
            done = Path(out_dir) / f"{i}.pkl"
            if not done.is_file():
                code = next(c for c, share in zip(codes, shares) if any(j == i for j, _ in share))
                out.append(LrscanError(f"{file}: its reading process ended with exit code {code} before reading it"))
                continue
            with open(done, "rb") as f:
                out.append(pickle.load(f))
            done.unlink()
    return out


def read_worker_main() -> None:
    """A reading worker: `python -c "from lrscan.pipeline.runlog.parallel import read_worker_main; read_worker_main()"`.

    Reads a pickled `(out_dir, keys, [(index, path), ...])` from stdin and writes `read_logged(path,
    keys)` of each file, pickled, to `out_dir/<index>.pkl` (written under a temporary name, then
    renamed, so a file there is whole). A fresh interpreter, not a multiprocessing child: it never
    re-runs the caller's main module (a script or notebook without a `__main__` guard works), and
    it imports only this package. It keeps glibc's own mmap threshold (no `map_big_arrays_alone`): it holds
    one run's columns at a time, and a fixed threshold would map and fault in afresh each segment's
    multi-MiB temporaries (measured: +1 s of system time a worker on five 200k-step runs, the same peak).
    """
    out_dir, keys, jobs = pickle.load(sys.stdin.buffer)
    for index, path in jobs:
        result = read_logged(path, keys)
        target = os.path.join(out_dir, f"{index}.pkl")
        with open(target + ".tmp", "wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(target + ".tmp", target)


def map_big_arrays_alone(threshold_bytes: int = OWN_MAPPING_BYTES) -> bool:
    """Have glibc give every allocation of `threshold_bytes` or more a mapping of its own; False where it can't.

    For a process' entry point only (the analysis CLI, a reading worker): it sets the C library's
    allocator for the whole process. Why: glibc raises its mmap threshold to the size of the
    biggest block freed so far (up to 32 MiB), so after the first run's arrays are freed, the next
    runs' 1-2 MB arrays come from the heap, where freed memory stays with the process. Reading 50
    runs and then moving them into one frame then holds both at once (+0.5 GiB at 10M rows). With
    a fixed threshold each big array is its own mapping, returned the moment it is freed.
    Elsewhere (macOS, musl) nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))


def _size_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
