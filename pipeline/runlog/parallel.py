"""Many wandb transaction logs read at once: one worker process per core, each reading whole files or stretches.

Reading is CPU-bound pure Python (framing.scan) and NumPy work (history), ~0.5-1 s per 200k-step file:
files are dealt to fresh interpreters (`python -c`, importing only this package: numpy, orjson, and
wandb's protobuf classes only for a history record the fast path cannot read; ~50-100 MiB each, never
the caller's pandas or main module), biggest first to the least loaded, and each hands back only the
keys its runs logged, pickled to a temporary folder. Fewer files than workers: each is cut into
stretches read apart and folded back together (reader.split_points, reader.fold_parts). A worker that
dies leaves its unread files as errors, not a hang.
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
from lrscan.pipeline.runlog.reader import Part, RunFile, fold_parts, keep_logged, read_logged, split_points

READ_WORKER = "from lrscan.pipeline.runlog.parallel import read_worker_main; read_worker_main()"
# files this big in all are read by worker processes in parallel: ~2.5 s of run files per start-up of one
PARALLEL_READ_BYTES = 48 * 2**20
# arrays this big or bigger get a memory mapping of their own (map_big_arrays_alone)
OWN_MAPPING_BYTES = 256 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def read_files(files: Sequence[str | os.PathLike], keys: Sequence[str] | None,
               workers: int | None = None) -> list[RunFile | LrscanError]:
    """Each file read (`read_logged`, in order), by `workers` processes (None: as many as this process
    may use cores, when the files are big enough to pay for starting them; 1: in this process).

    With fewer files than workers, a file is cut into stretches (`split_points`), read by several workers
    and folded together (`fold_parts`): one big run reads in about half the time on two cores."""
    files = [Path(os.fspath(f)) for f in files]
    keys = list(keys) if keys is not None else None
    if workers is None:
        big = sum(_size_bytes(f) for f in files) >= PARALLEL_READ_BYTES
        workers = len(os.sched_getaffinity(0)) if big else 1
    if workers <= 1 or not files:
        return [read_logged(f, keys) for f in files]
    # the jobs: whole files, or, when there are fewer files than workers (and every key is not asked for:
    # that read decodes its history at the end, whole), stretches of them
    jobs: list[tuple[int, str, tuple[int, int | None] | None]] = []
    for i, file in enumerate(files):
        cuts = split_points(file, workers // len(files)) if len(files) < workers and keys is not None else []
        if not cuts:
            jobs.append((i, str(file), None))
            continue
        # the last stretch runs to the file's end when it is read: a run still being written may have grown
        edges = [0, *cuts, None]
        jobs += [(i, str(file), (a, b)) for a, b in zip(edges, edges[1:])]
    if len(jobs) < 2:
        return [read_logged(f, keys) for f in files]
    # cut files: this process reads the first stretch while the workers (one fewer) start and read the others
    here = 1 if any(span is not None for _, _, span in jobs) else 0
    # the jobs dealt to the workers biggest first, each to the least loaded: even shares of bytes
    sizes = [_size_bytes(files[i]) if span is None else (span[1] or _size_bytes(files[i])) - span[0]
             for i, _, span in jobs]
    shares: list[list[tuple[int, str, tuple[int, int | None] | None]]] = [
        [] for _ in range(min(workers - here, len(jobs) - here))]
    loads = [0] * len(shares)
    for j in sorted(range(here, len(jobs)), key=lambda j: -sizes[j]):
        least = loads.index(min(loads))
        shares[least].append((j, jobs[j][1], jobs[j][2]))
        loads[least] += sizes[j]
    done: dict[int, RunFile | Part | LrscanError] = {}
    with tempfile.TemporaryDirectory(prefix="lrscan-read-") as out_dir:
        procs = []
        for share in shares:
            proc = subprocess.Popen([sys.executable, "-c", READ_WORKER], stdin=subprocess.PIPE)
            proc.stdin.write(pickle.dumps((out_dir, keys, share)))
            proc.stdin.close()
            procs.append(proc)
        if here:
            done[0] = read_logged(jobs[0][1], keys, jobs[0][2])
        codes = [proc.wait() for proc in procs]
        for j in range(here, len(jobs)):
            result = Path(out_dir) / f"{j}.pkl"
            if result.is_file():
                with open(result, "rb") as f:
                    done[j] = pickle.load(f)
                result.unlink()
            else:
                code = next(c for c, share in zip(codes, shares) if any(k == j for k, _, _ in share))
                done[j] = LrscanError(f"{jobs[j][1]}: its reading process ended with exit code {code} "
                                      "before reading it")
    out: list[RunFile | LrscanError] = []
    for i in range(len(files)):
        results = [done[j] for j, (file_index, _, _) in enumerate(jobs) if file_index == i]
        error = next((r for r in results if isinstance(r, LrscanError)), None)
        if error is not None:
            out.append(error)
        elif len(results) == 1 and isinstance(results[0], RunFile):
            out.append(results[0])
        else:
            run = fold_parts(results, keys)
            run.history = keep_logged(run.history, run.nan_logged)
            out.append(run)
    return out


def read_worker_main() -> None:
    """A reading worker: `python -c "from lrscan.pipeline.runlog.parallel import read_worker_main; read_worker_main()"`.

    Reads a pickled `(out_dir, keys, [(index, path, span), ...])` from stdin and writes `read_logged(path,
    keys, span)` of each job (a file, or a stretch of one), pickled, to `out_dir/<index>.pkl` (written under a
    temporary name, then
    renamed, so a file there is whole). A fresh interpreter, not a multiprocessing child: it never
    re-runs the caller's main module (a script or notebook without a `__main__` guard works), and
    it imports only this package. It keeps glibc's own mmap threshold (no `map_big_arrays_alone`): it holds
    one run's columns at a time, and a fixed threshold would map and fault in afresh each segment's
    multi-MiB temporaries (measured: +1 s of system time a worker on five 200k-step runs, the same peak).
    """
    out_dir, keys, jobs = pickle.load(sys.stdin.buffer)
    for index, path, span in jobs:
        result = read_logged(path, keys, span)
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
