"""The whole study in one command: range test -> picked exponent -> decay grid -> report.

    python -m pipeline.study                      # the demo: minutes on 2 CPU cores, offline
    python -m pipeline.study --size=full          # the seed's sizes: 1000-step range tests, 200k-step runs
    python -m pipeline.study --wandb_mode=online --project=P [--entity=E]   # the same, on the W&B cloud

Stages, each resumable (kill the study anywhere, run the same command again):

1. the range-test sweep (sweeps/lr_range.yaml, several seeds) through the local runner;
2. the analysis picks the exponent, with its bootstrap CI and the other suggesters;
3. the decay-grid sweep (sweeps/decay_grid.yaml) with the picked lr as the base lr;
4. the analysis of that grid.

Everything lands in one folder (default runs/study-<size>): the derived sweep YAMLs (stages/), the
sweeps' runs and manifests (sweeps/), and report/ with the range and decay reports, summary.json,
report.md and the exact commands that redo each stage by hand. Finished sweep points are never run
again; the pick is kept in state.json so a resumed study runs the same decay grid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from pipeline.errors import LrscanError, exit_with
from pipeline.fsutil import atomic_write_text

PROG = "pipeline.study"
REPO = Path(__file__).resolve().parent.parent
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Size:
    """Parameter overrides of the two sweeps for one study size."""

    range_overrides: Mapping[str, Any]
    decay_overrides: Mapping[str, Any]
    block_steps: int


SIZES = {
    # the seed's range test with three seeds; a short decay grid of the lecture's final model
    "demo": Size(
        range_overrides={"steps": {"value": 1000}, "lre_min": {"value": -3.0}, "lre_max": {"value": 0.0},
                         "seed": {"values": [1, 2, 3]}},
        decay_overrides={"steps": {"value": 12000}, "decay_steps": {"values": [[3000], [6000], [9000]]},
                         "decay_lrs": {"values": [[0.01], [0.001]]}, "eval_every_steps": {"value": 3000}},
        block_steps=500,
    ),
    # the YAMLs as written: 1000-step range tests over several ranges and seeds, 200k-step decay runs
    "full": Size(range_overrides={}, decay_overrides={}, block_steps=1000),
}


def read_base(base_yaml: Path) -> dict[str, Any]:
    """A sweep YAML the study derives its stages from, checked."""
    try:
        config = yaml.safe_load(base_yaml.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise LrscanError(f"cannot read sweep file {str(base_yaml)!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict) or not isinstance(config.get("parameters"), dict):
        raise LrscanError(f"{base_yaml}: not a sweep file with parameters")
    return config


def derive_sweep(base_yaml: Path, dest: Path, overrides: Mapping[str, Any], note: str) -> Path:
    """Write `base_yaml` with some parameters replaced to `dest` (the same text on every resume)."""
    config = read_base(base_yaml)
    config["parameters"] = {**config["parameters"], **overrides}
    header = f"# derived by {PROG} from {base_yaml.name}: {note}\n"
    text = header + yaml.safe_dump(config, sort_keys=False)
    if not dest.exists() or dest.read_text() != text:
        atomic_write_text(dest, text)
    return dest


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # a state file is only a cache of the pick; recomputing it is always possible


def _write_state(folder: Path, state: Mapping[str, Any]) -> None:
    atomic_write_text(folder / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))


def _fmt(value: Any) -> str:
    """An exponent or a [low, high] interval for people; 'n/a' where there is none (one seed: no CI)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]" if value else "n/a"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.3f}"


def _stage(n: int, text: str) -> None:
    print(f"\n[{n}/4] {text}", flush=True)


class Study:
    def __init__(self, *, size: str | Size, out: Path, workers: int | None, wandb_mode: str, project: str, entity: str,
                 range_yaml: Path, decay_yaml: Path, n_boot: int, api: Any = None):
        if isinstance(size, str) and size not in SIZES:
            raise LrscanError(f"--size={size!r}: expected one of {', '.join(SIZES)}")
        if wandb_mode == "online" and not project:
            raise LrscanError("--wandb_mode=online needs --project=NAME (the W&B project the runs go to)")
        if n_boot < 0:
            raise LrscanError(f"--n_boot={n_boot}: must be >= 0")
        if workers is not None and workers < 1:
            raise LrscanError(f"--workers={workers}: need at least 1")
        # both base sweeps are read before anything is written, so a bad one leaves no folder behind
        read_base(range_yaml)
        read_base(decay_yaml)
        # a Size object: a custom study size (the tests' tiny one)
        self.size, self.spec = (size, SIZES[size]) if isinstance(size, str) else ("custom", size)
        self.out, self.workers, self.wandb_mode = out, workers, wandb_mode
        self.project, self.entity = project, entity
        self.range_yaml, self.decay_yaml = range_yaml, decay_yaml
        self.n_boot, self.api = n_boot, api
        self.commands: list[str] = []

    # -- the stages ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from pipeline.sweep import load_sweep

        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LrscanError(f"--out={str(self.out)!r}: cannot create it ({e.strerror})") from None
        state = _read_state(self.out)
        t0 = time.monotonic()

        range_path = derive_sweep(self.range_yaml, self.out / "stages" / "lr_range.yaml", self.spec.range_overrides,
                                  f"study size {self.size}")
        range_sweep = load_sweep(range_path)
        _stage(1, f"range test: {len(range_sweep.points)} runs ({range_sweep.key})")
        self._sweep(range_sweep)

        _stage(2, "picking the exponent")
        range_report = self._analyse(range_sweep, "range")
        pick = range_report.summary
        if pick.get("best_lre") is None:
            raise LrscanError(f"the range test gave no pick; see {self.out / 'report' / 'range' / 'report.md'}")
        if state.get("range_key") == range_sweep.key and "best_lre" in state:
            best_lre = state["best_lre"]  # a resumed study keeps the lr its decay grid was started with
        else:
            best_lre = float(pick["best_lre"])
            state = {"range_key": range_sweep.key, "best_lre": best_lre}
            _write_state(self.out, state)
        best_lr = 10.0 ** best_lre
        print(f"picked lre = {best_lre:.3f} (95% CI {_fmt(pick.get('best_lre_ci'))}) -> lr = {best_lr:.4g}; "
              f"steepest {_fmt(pick.get('steepest_lre'))}, valley {_fmt(pick.get('valley_lre'))}", flush=True)

        decay_overrides = {**self.spec.decay_overrides, "lr": {"value": round(best_lr, 6)}}
        decay_path = derive_sweep(self.decay_yaml, self.out / "stages" / "decay_grid.yaml", decay_overrides,
                                  f"study size {self.size}, base lr 10**{best_lre:.3f} from the range test")
        decay_sweep = load_sweep(decay_path)
        _stage(3, f"decay grid at lr {best_lr:.4g}: {len(decay_sweep.points)} runs ({decay_sweep.key})")
        self._sweep(decay_sweep)

        _stage(4, "analysing the decay grid")
        decay_report = self._analyse(decay_sweep, "decay")
        summary = self._write_top(range_report, decay_report, best_lre, time.monotonic() - t0)
        best = (decay_report.summary.get("decay") or {}).get("best") or {}
        print(f"\nbest decay config: {best}", flush=True)
        print(f"report: {self.out / 'report' / 'report.md'}", flush=True)
        return summary

    def _sweep(self, sweep) -> None:
        from pipeline.sweep import run_sweep

        out = self.out / "sweeps"
        env_note = f"WANDB_MODE={self.wandb_mode} " + (f"WANDB_PROJECT={self.project} " if self.project else "")
        self.commands.append(f"{env_note}python -m pipeline.sweep {shlex.quote(sweep.path)} --out {shlex.quote(str(out))}")
        code = run_sweep(sweep, str(out), workers=self.workers, wandb_mode=self.wandb_mode)
        if code != 0:
            raise LrscanError(f"sweep {sweep.key} has points that did not finish (see {out / sweep.key / 'manifest.jsonl'} "
                              f"and logs/); run the same command again to retry them")

    def _analyse(self, sweep, name: str):
        from analysis.report import write_report
        from analysis.sources import load_runs

        if self.wandb_mode == "online":
            if not self.entity:
                import wandb

                self.api = self.api or wandb.Api()
                self.entity = self.api.default_entity  # the user's own, as `wandb sweep` would use
            source = f"{self.entity}/{self.project}"
        else:
            source = str(self.out / "sweeps" / sweep.key / "wandb")
        loaded = load_runs(source, group=sweep.key, api=self.api)
        dest = self.out / "report" / name
        self.commands.append(f"python -m analysis {shlex.quote(source)} --group {sweep.key} --out {shlex.quote(str(dest))}"
                             f" --block-steps {self.spec.block_steps}")
        return write_report(dest, loaded, block_steps=self.spec.block_steps, n_boot=self.n_boot, source=source,
                            filters={"group": sweep.key})

    def _write_top(self, range_report, decay_report, best_lre: float, seconds: float) -> dict[str, Any]:
        folder = self.out / "report"
        rs, ds = range_report.summary, decay_report.summary
        summary = {
            "size": self.size,
            "wandb_mode": self.wandb_mode,
            "seconds": round(seconds, 1),
            "best_lre": best_lre,
            "best_lr": 10.0 ** best_lre,
            "best_lre_ci": rs.get("best_lre_ci"),
            "suggesters": {"minimum": rs.get("best_lre"), "steepest": rs.get("steepest_lre"), "valley": rs.get("valley_lre")},
            "range": {"report": "range/report.md", "counts": rs.get("counts"), "per_run": rs.get("per_run")},
            "decay": {"report": "decay/report.md", "counts": ds.get("counts"), **(ds.get("decay") or {})},
            "commands": list(self.commands),
        }
        atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str))
        figures = [f for f in range_report.files if f.endswith(".png")]
        decay_figs = [f for f in decay_report.files if f.endswith(".png")]
        best = summary["decay"].get("best") or {}
        lines = [
            f"# lrscan study ({self.size})",
            "",
            f"Picked exponent **{best_lre:.3f}** (95% bootstrap CI over seeds {_fmt(summary['best_lre_ci'])}), "
            f"lr = {10 ** best_lre:.4g}. Other suggesters: steepest {_fmt(rs.get('steepest_lre'))}, "
            f"valley {_fmt(rs.get('valley_lre'))}.",
            "",
            *[f"![{f}](range/{f})" for f in figures],
            "",
            f"Decay grid at that lr: best config {best}.",
            "",
            *[f"![{f}](decay/{f})" for f in decay_figs],
            "",
            "Full reports: [range test](range/report.md), [decay grid](decay/report.md).",
            "",
            "## Redo each stage by hand",
            "",
            "```",
            *self.commands,
            "```",
            "",
        ]
        atomic_write_text(folder / "report.md", "\n".join(lines))
        return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="range test -> pick -> decay grid -> report, resumable")
    p.add_argument("--size", default="demo", choices=sorted(SIZES), help="demo (minutes on 2 cores) or full (the seed's sizes)")
    p.add_argument("--out", default=None, help="study folder (default runs/study-<size>)")
    p.add_argument("--workers", type=int, default=None, help="runs at once (default: usable cores)")
    p.add_argument("--wandb_mode", "--wandb-mode", default="offline", choices=("offline", "online"), help="offline (default) or online")
    p.add_argument("--project", default="", help="W&B project (online)")
    p.add_argument("--entity", default="", help="W&B entity (online; default: yours)")
    p.add_argument("--range_yaml", default=str(REPO / "sweeps" / "lr_range.yaml"))
    p.add_argument("--decay_yaml", default=str(REPO / "sweeps" / "decay_grid.yaml"))
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples of the pick's CI")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    out = Path(args.out or f"runs/study-{args.size}")
    if args.wandb_mode == "online":
        os.environ["WANDB_MODE"] = "online"
        if args.project:
            os.environ["WANDB_PROJECT"] = args.project
        if args.entity:
            os.environ["WANDB_ENTITY"] = args.entity
    try:
        Study(size=args.size, out=out, workers=args.workers, wandb_mode=args.wandb_mode, project=args.project,
              entity=args.entity, range_yaml=Path(args.range_yaml), decay_yaml=Path(args.decay_yaml),
              n_boot=args.n_boot).run()
    except LrscanError as e:
        exit_with(e, PROG)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    main()
