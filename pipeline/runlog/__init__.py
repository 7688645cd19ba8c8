"""Read wandb transaction logs (`run-<id>.wandb`) into plain Python and NumPy, fast: the package's face.

Why this is hand-written: wandb 0.30 removed its Python reader (`wandb.sdk.internal.datastore`);
the only reader left is `wandb leet inspect --json`, a Go binary that prints every record as JSON
(~35x slower than this package, file to frame, measured by benchmarks/bench_read.py). No maintained
package reads these files into pandas. One responsibility a module:

    framing.py    the file's header, 32 KiB blocks and crc-checked chunks, split into records by kind
    items.py      where each wanted key's value is in every history record, found with NumPy
    history.py    history records to one float64 column per wanted key (orjson reads the values)
    reader.py     one file, or a stretch of one, to a `RunFile` (`read_run_file`, `read_part`, `fold_parts`)
    parallel.py   many files at once, by worker processes (`read_files`), and the allocator setting
                  that returns a freed array's memory (`map_big_arrays_alone`)

Damage is counted, never fatal: a chunk with a bad crc, broken framing or an unparsable record adds
to `skipped_records` and reading goes on; a partial last block sets `truncated`.
"""

from __future__ import annotations

from lrscan.pipeline.runlog.framing import (
    BLOCK_BYTES,
    CHUNK_HEADER,
    CHUNK_HEADER_BYTES,
    FIRST,
    FULL,
    HEADER,
    LAST,
    MIDDLE,
)
from lrscan.pipeline.runlog.history import STEP_ITEM
from lrscan.pipeline.runlog.parallel import map_big_arrays_alone, read_files, read_worker_main
from lrscan.pipeline.runlog.reader import SEGMENT_BYTES, RunFile, last_logged, read_logged, read_run_file

__all__ = ["BLOCK_BYTES", "CHUNK_HEADER", "CHUNK_HEADER_BYTES", "FIRST", "FULL", "HEADER", "LAST", "MIDDLE",
           "SEGMENT_BYTES", "STEP_ITEM", "RunFile", "last_logged", "map_big_arrays_alone", "read_files", "read_logged",
           "read_run_file", "read_worker_main"]
