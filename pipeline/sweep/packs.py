"""Which of a sweep's points train together in one process (a pack), how many, and in which order.

    python -m pipeline.sweep sweeps/lr_range.yaml --pack 16   # up to 16 compatible points per process
    python -m pipeline.sweep sweeps/lr_range.yaml --pack 1    # one process per point

A pack is one `python -m pipeline.pack POINTS.json` process training up to N points of lrscan's
trainer stacked (the makemore MLP's batched step), each point still its own W&B run, manifest row
and claim. Points share a pack when `pipeline.packing.pack_key` says they can (same task, data,
model shapes, steps and schedule kind; seed, lr range, lr, decay steps and lrs may differ). A point
runs alone, and the runner says why once, when the sweep does not run lrscan's trainer by its
standard command, or when the point trains a task of its own (`--task`) that torch.func cannot step as
its own optimizer would (`pipeline.pack.functional.why_not_functional`: SGD, Adam or AdamW in any
param groups, batch(step) not drawing from the global random state, no buffer replaced in forward,
no randomness in forward, no accumulation or GradScaler); the runner builds such a task once per
pack key (make(seed) of its first point) to check it.

The default N follows the device the points train on: a GPU keeps 64 small models busy where one
leaves it idle; on a CPU the batched step stops gaining past ~16 members (measured: 79 µs per
member-step at 8, 75 at 32, against ~135 for one run's hand-written step) and the logging process
becomes the limit.

Order: the runner takes points in W&B's order; a pack is the first claimable point and the next
claimable points of the same key. A pack of the makemore MLP takes two workers' slots (`PACK_SLOTS`:
its trainer and its logging process each keep a core busy), and packs are sized so that the free
slots all get work (16 points, 4 workers, --pack 16: two packs of 8; on 2 workers: one pack of 16).
A task's pack takes one slot when a member's step alone (timed by the task check) is at least
`ONE_SLOT_RATIO` times its logging's work (`LOGGER_STEP_SECONDS`): its logging process then needs a
tenth of a core, and one pack per free slot, each on its members' own thread count, beats one pack on
more intra-op threads (examples/wavenet.py, 5 members, quiet machine: 14-16 ms a step on one thread,
10.5 ms on two, while two packs on two cores halve it; on a busy machine two intra-op threads were 7x
slower, OpenMP waiting for a core another process holds). `pack_plan` fixes
packs ahead for Slurm job arrays: the points in W&B's order, grouped by key in order of first
appearance, N at a time; array task t runs pack t.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig, parse_args
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.packing import TASK_CHECK_SECONDS, WHY_NOT_FLAG, pack_key
from lrscan.pipeline.sweep.spec import Sweep, is_trainer

CPU_PACK = 16
GPU_PACK = 64
# a pack keeps two cores busy: its trainer, and its logging process (wandb's own work for K runs is as
# much CPU as the batched step: ~80 µs per member-step each, measured); it takes two workers' slots
PACK_SLOTS = 2
PACK_MODULE = "lrscan.pipeline.pack"
# a pack's logging process: wandb's work for one member's step (~80 µs measured, as much as the MLP's batched step)
LOGGER_STEP_SECONDS = 80e-6
# a task whose step alone takes at least this many times its logging's work packs in one worker slot
ONE_SLOT_RATIO = 10


@dataclass(frozen=True)
class PackKeys:
    """Each point's pack key (None: it runs alone), why the points that run alone do, and the worker slots a
    pack of each key takes (with the measured seconds of one member's step, for tasks)."""

    keys: list[str | None]
    alone: dict[int, str]
    slots: dict[str, int]
    step_seconds: dict[str, float]

    def slots_of(self, key: str | None) -> int:
        return self.slots.get(key, PACK_SLOTS) if key is not None else 1

    def slot_lines(self, sweep: Sweep, workers: int) -> list[str]:
        """What the runner says once: how each task's packs use the workers' slots, and why."""
        lines = []
        for key, seconds in self.step_seconds.items():
            task = point_config(sweep.points[self.keys.index(key)]).task
            slots = min(self.slots_of(key), workers)
            lines.append(f"packs of {task} take {slots} worker slot(s) each, as many packs as {workers} worker(s) "
                         f"take, each on its members' num_threads: a member's step takes {seconds * 1e3:.2f} ms "
                         f"alone, its logging ~{LOGGER_STEP_SECONDS * 1e3:.2f} ms"
                         + (", the logging process needs a core of its own" if slots > 1 else ""))
        return lines


def trainer_args(point: dict[str, Any]) -> list[str]:
    """The trainer's arguments for a point: W&B's `${args}`, `--key=value` rendered with `str()`."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return list(create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args"])


def why_not_packed(sweep: Sweep) -> str:
    """Why no point of this sweep can be packed ('' when its points can): packs run lrscan's trainer only."""
    if not is_trainer(sweep):
        return "packs run lrscan's trainer (pipeline.train); this sweep runs another program"
    words = [w for w in sweep.command if w != "${env}"]
    python = bool(words) and os.path.basename(words[0]).startswith("python")
    by_module = len(words) == 4 and words[1] == "-m" and words[2] in keys.TRAINER_MODULES and words[3] == "${args}"
    by_program = len(words) == 3 and words[1:] == ["${program}", "${args}"]
    standard = python and (by_module or by_program)
    if not standard:
        return (f"its command {list(sweep.command)} is not the trainer's standard one "
                f"({' '.join(keys.TRAINER_COMMAND)}); a pack could not pass on what it adds")
    return ""


def pack_keys(sweep: Sweep, packing: bool = True) -> PackKeys:
    """Each point's pack key, why the others run alone, and each key's slots (`PackKeys`); packing False
    (--pack 1): every point alone, nothing checked or said."""
    n = len(sweep.points)
    if not packing:
        return PackKeys([None] * n, {}, {}, {})
    why = why_not_packed(sweep)
    if why:
        return PackKeys([None] * n, dict.fromkeys(range(n), why), {}, {})
    out: list[str | None] = []
    alone: dict[int, str] = {}
    task_why: dict[str, str] = {}  # by pack key: each task is built and checked once
    slots: dict[str, int] = {}
    step_s: dict[str, float] = {}
    for index, point in enumerate(sweep.points):
        cfg = parse_args(trainer_args(point))
        key = pack_key(cfg)
        if cfg.task:
            # a task of the user's own packs when torch.func can step its copies as its optimizer would
            if key not in task_why:
                task_why[key], step_s[key] = checked_task(tuple(trainer_args(point)), cfg.task)
                slots[key] = slots_for_step(step_s[key])
            if task_why[key]:
                alone[index] = f"it trains its own task ({cfg.task}), which a pack cannot step: {task_why[key]}"
                out.append(None)
                continue
        out.append(key)
    return PackKeys(out, alone, {k: v for k, v in slots.items() if not task_why[k]},
                    {k: v for k, v in step_s.items() if not task_why[k]})


def slots_for_step(step_seconds: float) -> int:
    """The worker slots a pack takes, by how long one member's step takes alone: one where the logging process
    needs a tenth of a core or less, else two (its trainer's and its logger's)."""
    return 1 if step_seconds >= ONE_SLOT_RATIO * LOGGER_STEP_SECONDS else PACK_SLOTS


def checked_task(args: tuple[str, ...], task: str) -> tuple[str, float]:
    """`why_not_packed_task(args)`, asked once per process for the same arguments and the same task file (its size
    and modification time): a study runs several sweeps of one task, a runner and its dry run ask again, and each
    check starts a process that imports torch and builds the task (seconds). A check that could not finish (a
    timeout, a crash) is asked again next time."""
    try:
        return _checked_task(args, _source_stamp(task))
    except _NotKept as e:
        return e.answer


class _NotKept(Exception):
    def __init__(self, answer: tuple[str, float]):
        super().__init__(answer[0])
        self.answer = answer


@functools.lru_cache(maxsize=64)
def _checked_task(args: tuple[str, ...], stamp: tuple) -> tuple[str, float]:
    why, seconds = why_not_packed_task(list(args))
    if why.startswith(UNCHECKED):
        raise _NotKept((why, seconds))  # lru_cache keeps answers, never exceptions
    return why, seconds


def _source_stamp(task: str) -> tuple:
    # a task named by its file ("path/to/file.py:make"): the file's size and modification time; a module's: none
    path = task.rpartition(":")[0] or task
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


UNCHECKED = ("checking its task took more than", "its task could not be checked")  # answers never kept


def why_not_packed_task(args: list[str], timeout_s: float = TASK_CHECK_SECONDS) -> tuple[str, float]:
    """Why points of a task cannot share a pack ('' when they can), asked of `python -m pipeline.pack`,
    and the seconds one member's step takes alone there: the answer needs the task built (torch, the
    user's make), which the runner leaves to that process."""
    try:
        done = subprocess.run([sys.executable, "-m", PACK_MODULE, WHY_NOT_FLAG, *args], capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"checking its task took more than {timeout_s:.0f} s", 0.0
    except OSError as e:
        return f"its task could not be checked ({e.strerror or e})", 0.0
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines()
        return f"its task could not be checked ({lines[-1] if lines else f'exit code {done.returncode}'})", 0.0
    *why, seconds = done.stdout.rstrip("\n").split("\n")  # its make may print: the answer is the last two lines
    try:
        return (why[-1].strip() if why else ""), float(seconds)
    except ValueError:
        return f"its task could not be checked (it answered {done.stdout.strip()[-200:]!r})", 0.0


def point_config(point: dict[str, Any]) -> TrainConfig:
    return parse_args(trainer_args(point))


def default_pack(sweep: Sweep, gpu_visible: bool) -> int:
    """The pack size for this sweep on this machine: GPU_PACK when its points train on a GPU, else CPU_PACK."""
    if why_not_packed(sweep) or not sweep.points:
        return 1
    device = point_config(sweep.points[0]).device
    on_gpu = device.startswith("cuda") or (device == "auto" and gpu_visible)
    return GPU_PACK if on_gpu else CPU_PACK


def gpu_visible() -> bool:
    """An NVIDIA GPU on this machine (what `--device=auto` would train on), without importing torch."""
    return os.path.isdir("/proc/driver/nvidia/gpus") and bool(os.listdir("/proc/driver/nvidia/gpus")) \
        or shutil.which("nvidia-smi") is not None


def check_pack(pack: int | None) -> None:
    if pack is not None and pack < 1:
        raise LrscanError(f"--pack {pack}: need at least 1 (1: one process per point)")


def pack_sizes(n_points: int, pack: int, free_workers: int, slots: int = PACK_SLOTS) -> int:
    """How many of `n_points` compatible claimable points go in the next pack, `free_workers` slots being free:
    as many packs as the slots take (`slots` each, at least one), so that each gets work."""
    packs = max(1, free_workers // slots)
    return max(1, min(pack, math.ceil(n_points / packs)))


def pack_plan(keys: Sequence[str | None], pack: int, indices: Sequence[int] | None = None,
              workers: int | None = None, slots: dict[str, int] | None = None) -> list[list[int]]:
    """Packs fixed ahead: the points in order, grouped by key in order of first appearance, `pack` at a time
    (Slurm's array tasks), or, with `workers`, in the sizes a fresh local run gives them (every worker a
    pack; a pack of key k takes slots[k] workers' slots, default PACK_SLOTS); a point without a key is a
    pack of its own."""
    wanted = list(range(len(keys))) if indices is None else list(indices)
    groups: dict[Any, list[int]] = {}
    for i in wanted:
        key = keys[i] if pack > 1 and keys[i] is not None else ("alone", i)
        groups.setdefault(key, []).append(i)
    plan = []
    for key, members in groups.items():
        size = pack if workers is None else pack_sizes(len(members), pack, workers, (slots or {}).get(key, PACK_SLOTS))
        plan += [members[j:j + size] for j in range(0, len(members), size)]
    return plan


def write_points_file(path: str, members: Sequence[tuple[str, list[str], str]]) -> None:
    """POINTS.json for `python -m pipeline.pack`: each member's run id, trainer arguments and end file."""
    atomic_write_text(path, json.dumps({"points": [{"run_id": r, "args": a, "end_file": e} for r, a, e in members]},
                                       indent=1) + "\n")


def read_end_file(path: str) -> dict[str, Any]:
    """How a pack says one member's run ended ({} while it has not)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
