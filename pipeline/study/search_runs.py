"""The study's search, run: each rung's runs trained in packs (pause_at_step), continued, parted at decay steps.

    search = Search(folder, base_args, pairs, horizon=12000, seeds=(1, 2, 3), workers=2, pack=16)
    search.train_to(nodes, 3000)          # every node x seed to step 3000 (new runs start, paused ones go on)
    search.part(children, at=3000)        # each child run starts from its parent's checkpoint at 3000
    search.losses(nodes, 3000)            # node -> held-out loss per seed at that rung (kept for a resume)

Each run is an ordinary trainer run (`python -m lrscan.pipeline.pack POINTS.json`, the sweep runner's
pack process: the makemore MLP stacked, a task packed with torch.func; forked from a server that
imported it once, `pipeline.pack.launcher`) configured for the whole horizon
with its lr schedule so far, and ended at a rung with `pause_at_step`: its checkpoint, unfinished, is what
the next rung continues, so no step is trained twice. A run parting at a decay step is a new W&B run whose
history starts at that step; the run it parted from holds the steps before (its config says which:
`wandb_tags` "parted-from-<run id>@<step>"). A killed study run again finds every rung's checkpoints and
trains only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.pack.launcher import PackLauncher
from lrscan.pipeline.study.search_plan import Node, Pair
from lrscan.pipeline.train import checkpoint

PACK_SECONDS_LIMIT = 24 * 3600  # a bound on one rung's pack process: a hung one is stopped and said
STOP_SECONDS_LIMIT = 60  # a bound on a stopped pack's last checkpoint


def node_name(node: Node) -> str:
    lr, decay = node
    return f"lr{lr:.4g}" + "".join(f"-x{f:g}@{b}" for b, f in decay)


def arg_text(value: Any) -> str:
    """A parameter value as the trainer's flags take it: lists as [a, b], mappings as Python literals."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, Mapping):
        return repr(dict(value))
    return str(value)


class Search:
    def __init__(self, folder: Path, base_args: Sequence[str], *, horizon: int, seeds: Sequence[int], key: str,
                 workers: int, pack: int | None, wandb_mode: str, environ: Mapping[str, str],
                 launcher: PackLauncher | None = None):
        self.folder, self.base_args, self.horizon, self.seeds = folder, list(base_args), horizon, list(seeds)
        self.key, self.workers, self.pack, self.wandb_mode = key, max(1, workers), pack, wandb_mode
        self.environ = dict(environ)
        self.ckpt_dir = folder / "checkpoints"
        self.steps_trained = 0  # run-steps trained by this process (a resumed study counts only what it trains)
        self.launcher = launcher  # the packs' fork server: the caller's, else started at the first rung that trains

    def run_id(self, node: Node, seed: int) -> str:
        digest = hashlib.sha1(json.dumps([node[0], node[1], seed]).encode()).hexdigest()[:8]
        return f"{self.key[-8:]}{digest}"

    def args(self, node: Node, seed: int, length: int) -> list[str]:
        lr, decay = node
        # a step schedule for every run, a run not yet decayed with no steps (a constant lr): a rung's runs share packs
        schedule = ["--schedule=step", f"--decay_steps={arg_text([b for b, _ in decay])}",
                    f"--decay_lrs={arg_text([lr * f for _, f in decay])}"]
        return [*self.base_args, f"--lr={lr!r}", *schedule, f"--steps={self.horizon}", f"--seed={seed}",
                f"--pause_at_step={0 if length >= self.horizon else length}", "--eval_every_steps=0",
                "--ckpt_every_steps=0", f"--ckpt_dir={self.ckpt_dir}", f"--wandb_group={self.key}",
                f"--wandb_name=search-{node_name(node)}-s{seed}", f"--wandb_mode={self.wandb_mode}",
                f"--run_id={self.run_id(node, seed)}"]

    def state(self, node: Node, seed: int) -> dict | None:
        path = checkpoint.ckpt_path(self.ckpt_dir, self.run_id(node, seed))
        return checkpoint.load(path) if path.exists() else None

    def part(self, children: Mapping[Node, Node], at: int) -> None:
        """Each child's runs start from its parent's checkpoint at step `at` (written once; a rerun keeps it)."""
        from lrscan.pipeline.config import TrainConfig

        for child, parent in children.items():
            for seed in self.seeds:
                dest = checkpoint.ckpt_path(self.ckpt_dir, self.run_id(child, seed))
                if dest.exists():
                    continue
                state = self.state(parent, seed)
                if state is None or state["step"] != at:
                    raise LrscanError(f"search: run {self.run_id(parent, seed)} ({node_name(parent)}, seed {seed}) "
                                      f"has no checkpoint at step {at} to continue {node_name(child)} from")
                lr, decay = child
                config = TrainConfig.from_mapping(state["config"]).replace(
                    schedule="step", decay_steps=tuple(b for b, _ in decay),
                    decay_lrs=tuple(lr * f for _, f in decay), run_id=self.run_id(child, seed),
                    wandb_name=f"search-{node_name(child)}-s{seed}",
                    wandb_tags=(f"parted-from-{self.run_id(parent, seed)}@{at}",))
                checkpoint.save(dest, {**{k: v for k, v in state.items() if k != "format_version"},
                                       "config": config.to_dict(), "run_id": config.run_id, "finished": False,
                                       "summary": {}})

    def train_to(self, nodes: Sequence[Node], length: int) -> None:
        """Every node x seed trained to `length` (paused there, or finished at the horizon), in packs, `workers`
        processes at a time; one line naming the log when a pack fails."""
        points = []
        for node in sorted(nodes):
            for seed in self.seeds:
                state = self.state(node, seed)
                if state is not None and (state["finished"] or state["step"] >= length):
                    continue  # there already (a rung's first pass before an edge's extension, a resumed study)
                self.steps_trained += length - (state["step"] if state else 0)
                points.append({"run_id": self.run_id(node, seed), "args": self.args(node, seed, length)})
        # one pack per worker: a rung's packs start, load and end their runs side by side (measured on 2 cores: the
        # demo's search 44 s with two packs a rung, 51 s with one, although a makemore pack's logging process keeps
        # a second core busy)
        if not points:
            return
        size = self.pack or math.ceil(len(points) / self.workers)
        packs = [points[i:i + size] for i in range(0, len(points), size)]
        env = {**self.environ, "WANDB_DIR": str(self.folder), "WANDB_MODE": self.wandb_mode,
               "WANDB_RUN_GROUP": self.key}
        for name in ("WANDB_SERVICE", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_SWEEP_ID"):
            env.pop(name, None)
        self.launcher = self.launcher or PackLauncher(env)
        running: list[tuple[int, Path]] = []
        try:
            for i, members in enumerate(packs):
                while len(running) >= self.workers:
                    self._wait(*running.pop(0))
                spec = self.folder / "packs" / f"rung{length}-{i}.json"
                log = spec.with_suffix(".log")
                atomic_write_text(spec, json.dumps({"points": members}, indent=1))
                running.append((self.launcher.start(spec, log, env), log))
            while running:
                self._wait(*running.pop(0))
        except BaseException as error:
            # a failed pack: the others stop too (SIGTERM: each checkpoints its members). A stop of the study (Ctrl-C
            # reaches the packs too, they share its process group): they end themselves, and are waited for, bounded
            for pid, _ in running:
                if isinstance(error, LrscanError):
                    self.launcher.kill(pid)
            for pid, _ in running:
                if self.launcher.wait(pid, STOP_SECONDS_LIMIT) is None:
                    self.launcher.kill(pid, signal.SIGKILL)
            raise

    def close(self) -> None:
        """End the pack launcher (the fork server), if one was started."""
        if self.launcher is not None:
            self.launcher.close()
            self.launcher = None

    def _wait(self, pid: int, log: Path) -> None:
        code = self.launcher.wait(pid, PACK_SECONDS_LIMIT)
        if code is None:
            self.launcher.kill(pid, signal.SIGKILL)
            code = self.launcher.wait(pid, STOP_SECONDS_LIMIT)
        if code != 0:
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            what = "stopped (Ctrl-C or SIGTERM), its checkpoints saved" if code == 130 else f"failed (exit {code})"
            raise LrscanError(f"search: a pack of runs {what}: {tail[0] if tail else ''} (log: {log}); "
                              f"run the same command again to continue")

    def losses(self, nodes: Sequence[Node], length: int, kind: str = "rung") -> dict[Node, np.ndarray]:
        """Each node's judged loss per seed (in `seeds` order) at the rung of `length` steps: the held-out loss its
        runs paused (or finished) with there. Kept in rungs/<kind><length>.json as first read (`kind`: "rung", or
        "probe" for a rung's probes): a run's checkpoint moves on with the next rung, and a resumed study must judge
        each rung again by what that rung saw."""
        path = self.folder / "rungs" / f"{kind}{length}.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        new = [node for node in nodes if node_name(node) not in saved]
        out = {}
        for node in nodes:
            name = node_name(node)
            if node in new:
                values = []
                for seed in self.seeds:
                    state = self.state(node, seed) or {}
                    if state and state.get("step") != length and not state.get("finished"):
                        raise LrscanError(f"search: run {self.run_id(node, seed)} ({name}, seed {seed}) is at step "
                                          f"{state.get('step')}, not at the rung of step {length} it is judged at")
                    values.append(held_out_loss(state.get("summary") or {}))
                saved[name] = values
            out[node] = np.array(saved[name], dtype=float)
        if new:
            atomic_write_text(path, json.dumps(saved, indent=1))
        return out


def held_out_loss(summary: Mapping[str, Any]) -> float:
    """A rung's judged value of one run: the held-out loss its run ended (or paused) with; inf when it diverged
    or logged none finite (ranked last, never chosen), as analysis.judge counts a divergence."""
    value = summary.get(keys.DEV_LOSS)
    if summary.get(keys.DIVERGED_AT_STEP) is not None or value is None or not math.isfinite(float(value)):
        return math.inf
    return float(value)


def pair_records(pairs: Sequence[Pair], status: Mapping[Pair, str], reached: Mapping[Pair, int],
                 losses: Mapping[Pair, np.ndarray], seeds: Sequence[int],
                 by_probe: Mapping[Pair, bool] | None = None) -> list[dict[str, Any]]:
    """summary.json's candidates: each pair with its status, the step it reached and its losses there (`by_probe`:
    those of its run's probe from that step, for a pair last judged while its run was at a constant lr)."""
    rows = []
    for p in pairs:
        v = losses.get(p, np.array([]))
        rows.append({"name": p.name, "lr": p.lr, "lre": math.log10(p.lr), "decay": [list(d) for d in p.decay],
                     "suggested_by": p.suggested_by, "status": status.get(p, ""), "reached_step": reached.get(p, 0),
                     "by_probe": bool((by_probe or {}).get(p, False)),
                     "losses": [float(x) for x in v], "seeds": list(seeds),
                     "mean": float(np.mean(v)) if len(v) and np.all(np.isfinite(v)) else math.inf})
    return sorted(rows, key=lambda r: (-r["reached_step"], r["mean"]))

