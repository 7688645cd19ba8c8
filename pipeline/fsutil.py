"""Writing a file so that a reader, or a crash, never sees half of it.

Every file lrscan writes for others to read (checkpoints, manifests, reports, sweep YAMLs, the data
file, caches) goes through `atomic_file`: the content goes to a temporary name in the same folder,
is flushed to disk, and is renamed over the target in one step. A kill at any moment leaves the old
file or the new one. The temporary name carries host, pid and a random part, so runners sharing a
folder over NFS never write the same temporary file.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """`with atomic_file(p) as f: f.write(...)`: `p` appears, whole, when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)
