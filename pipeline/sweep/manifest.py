"""What a sweep folder records about its sweep: the YAML as given, its key, and the manifest, one row per point.

The sweep folder, `<out>/<sweep key>/` (the key is `pipeline.sweep.spec`'s: an edited YAML is a new sweep):

    sweep.yaml         the YAML as given          sweep.json     key, name, method, points
    manifest.jsonl     one line per point: index, run_id, state, attempts, exit_code, timings, pack, config
    claims/            who runs which point (`pipeline.sweep.claims`: exclusive, leased, NFS-safe)
    logs/              each attempt's stdout+stderr (a pack's attempt: one log for its members)
    packs/             each pack's points file and its members' end files (`pipeline.sweep.packs`)
    wandb/             the offline runs (`wandb sync <out>/<key>/wandb/offline-run-*`)
    checkpoints/       the trainer's checkpoints, `<run_id>.pt`

The claims are the truth; the manifest is their summary, rewritten whole (atomically) whenever a
point's state changes, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.sweep.claims import PointState
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.spec import Sweep

DEFAULT_OUT = "runs"
MANIFEST = "manifest.jsonl"


def sweep_folder(out: str, sweep: Sweep) -> str:
    """`<out>/<sweep key>`: every runner of this sweep, on any machine sharing `out`, uses this one folder."""
    return os.path.join(out, sweep.key)


def prepare_folder(folder: str, sweep: Sweep) -> None:
    """Create the folder and record the sweep in it (sweep.yaml, sweep.json), once: the first runner writes them."""
    os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
    meta = {"key": sweep.key, "name": sweep.name, "method": sweep.method, "program": sweep.program,
            "command": list(sweep.command), "points": len(sweep.points), "seed": sweep.seed, "yaml": sweep.path}
    for name, text in (("sweep.yaml", sweep.text), ("sweep.json", json.dumps(meta, indent=1) + "\n")):
        target = os.path.join(folder, name)
        if not os.path.exists(target):
            atomic_write_text(target, text)


def manifest_rows(sweep: Sweep, states: Sequence[PointState]) -> list[dict[str, Any]]:
    """One row per point: its run, its current attempt's state and timings, and the point itself."""
    rows = []
    for st in states:
        claim, end = st.claim, st.end
        rows.append({
            "index": st.index,
            "run_id": run_id_for(sweep.key, st.index),
            "state": st.state,
            "attempts": st.gen + 1,
            "exit_code": end.get("exit_code"),
            "started_at": claim.get("started_at"),
            "ended_at": end.get("ended_at"),
            "seconds": end.get("seconds"),
            "worker": claim.get("worker"),
            "log": claim.get("log"),
            "pack": claim.get("pack"),  # the run ids trained in the same process as this point's attempt, if packed
            "config": sweep.points[st.index],
        })
    return rows


def write_manifest(folder: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace the manifest atomically: a reader never sees half a file, even mid-Ctrl-C."""
    atomic_write_text(os.path.join(folder, MANIFEST), "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows))


def read_manifest(folder: str | os.PathLike):
    """A sweep folder's manifest as a DataFrame, one row per point (the `config` column holds dicts)."""
    import pandas as pd

    path = Path(folder) / MANIFEST
    if not path.exists():
        raise LrscanError(f"no {MANIFEST} in {str(folder)!r}: not a sweep folder, or the sweep never started")
    return pd.read_json(path, lines=True, dtype={"exit_code": "Int64"})
