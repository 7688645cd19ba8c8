"""The whole study in one command: range test -> picked exponent -> one search over (peak lr, decay) -> report.

    python -m pipeline.study                      # the demo: minutes on 2 CPU cores, offline
    python -m pipeline.study --size=full          # the seed's sizes: 1000-step range tests, 200k-step runs
    python -m pipeline.study --wandb_mode=online --project=P [--entity=E]   # the same, on the W&B cloud
    python -m pipeline.study --task=examples/wavenet.py:make [--task_args="{'n_embd': 24}"]   # on your own model
    python -m pipeline.study --task=... --lre_min=-5 --lre_max=-1   # another range for the range test (AdamW's)

Stages, each resumable (kill the study anywhere, run the same command again), numbered as they run:

1. the range-test sweep (sweeps/lr_range.yaml, several seeds) through the local runner;
2. the analysis picks the exponent, with its bootstrap CI and the other suggesters;
   (--zoom: the zoom sweep around the pick, picked again: its candidates are the ones searched;)
3. the search (pipeline/study/search_stage.py): the suggesters' lrs (and --prove-lrs, exactly) x the decay
   grid's options (decay_steps x --decay_factors), each pair trained with that schedule to the decay grid's
   length on --prove-seeds paired seeds, judged at each decay step and at the horizon, the pairs told apart
   as worse dropped and the others continued from their checkpoints; the budget is what the prove stage
   and the decay grid it replaces cost (run-steps), the tie rule is stated in summary.json (`rule`).

With --no-prove: 3. the decay-grid sweep (sweeps/decay_grid.yaml) at the min-loss pick, exactly, its decayed
lrs that pick times each of --decay_factors; 4. the analysis of that grid.

Online, credentials (WANDB_API_KEY or the netrc entry `wandb login` writes), the server (a few
seconds' check of its URL) and the entity are checked before stage 1: a missing one is one line.

Everything lands in one folder (default runs/study-<size>): the derived sweep YAMLs (stages/), the
sweeps' runs and manifests (sweeps/), and report/ with the range and decay reports, summary.json,
report.md and the exact commands that redo each stage by hand. Finished sweep points are never run
again; the pick is kept in state.json so a resumed study runs the same decay grid.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.study.decay import (
    DEFAULT_DECAY_FACTORS,
    best_decay_sentence,
    check_decay_factors,
    check_decay_points,
    decay_lr_values,
    decay_table_markdown,
)
from lrscan.pipeline.study.online import (
    ONLINE_CHECK_SECONDS,
    WandbAccess,
    check_credentials,
    check_reachable,
    default_entity,
    public_api,
)
from lrscan.pipeline.study.prove_stage import DEFAULT_SEEDS, check_prove_flags, lre_text
from lrscan.pipeline.yamlfile import read_yaml_mapping

PROG = "lrscan study"  # how errors and notices start: the command that runs it, installed
# the sweep YAMLs the study starts from travel as package data (pipeline/study/yamls/, which the repo's
# sweeps/ links to), so an installed lrscan finds them from any folder
YAMLS = Path(str(resources.files("lrscan.pipeline.study") / "yamls"))
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Size:
    """Parameter overrides of the two sweeps for one study size."""

    range_overrides: Mapping[str, Any]
    decay_overrides: Mapping[str, Any]
    block_steps: int


SIZES = {
    # the seed's range test with five seeds (fewer give a bootstrap CI of a handful of distinct
    # resamples); a short decay grid of the lecture's final model
    "demo": Size(
        range_overrides={"steps": {"value": 1000}, "lre_min": {"value": -3.0}, "lre_max": {"value": 0.0},
                         "seed": {"values": [1, 2, 3, 4, 5]}},
        decay_overrides={"steps": {"value": 12000}, "decay_steps": {"values": [[3000], [6000], [9000]]},
                         "eval_every_steps": {"value": 3000}},
        block_steps=500,
    ),
    # seconds, not minutes: that an installed lrscan runs end to end (a 300-step range test on three seeds,
    # a 600-step decay grid of two runs); its pick is not one to train with
    "smoke": Size(
        range_overrides={"steps": {"value": 300}, "lre_min": {"value": -3.0}, "lre_max": {"value": 0.0},
                         "seed": {"values": [1, 2, 3]}},
        decay_overrides={"steps": {"value": 600}, "decay_steps": {"values": [[300]]},
                         "eval_every_steps": {"value": 300}},
        block_steps=100,
    ),
    # the YAMLs as written: 1000-step range tests over several ranges and seeds, 200k-step decay runs
    "full": Size(range_overrides={}, decay_overrides={}, block_steps=1000),
}


def read_base(base_yaml: Path) -> dict[str, Any]:
    """A sweep YAML the study derives its stages from, checked."""
    config = read_yaml_mapping(base_yaml, "sweep file")
    if not isinstance(config.get("parameters"), dict):
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


def _stage(n: int, text: str, of: int = 5) -> None:
    print(f"\n[{n}/{of}] {text}", flush=True)


def check_task_flags(task: str, task_args: Any) -> tuple[str, dict[str, Any]]:
    """--task and --task_args checked as the trainer checks them; task_args as text (the flag) or a mapping."""
    from lrscan.pipeline.config import TrainConfig, parse_value

    if isinstance(task_args, str):
        task_args = parse_value("task_args", task_args) if task_args.strip() else {}
    config = TrainConfig(task=task or "", task_args=dict(task_args or {}))  # one line when either is wrong
    return config.task, dict(config.task_args)


def check_lre_range(lre_min: float | None, lre_max: float | None) -> tuple[float, float] | None:
    """--lre_min and --lre_max, together or not at all, low before high; None: the size's ranges."""
    if lre_min is None and lre_max is None:
        return None
    if lre_min is None or lre_max is None:
        raise LrscanError("--lre_min and --lre_max go together (the range test's first and last lr exponent)")
    if not (math.isfinite(lre_min) and math.isfinite(lre_max) and lre_min < lre_max):
        raise LrscanError(f"--lre_min={lre_min} --lre_max={lre_max}: need finite exponents, lre_min < lre_max")
    return float(lre_min), float(lre_max)


class Study:
    def __init__(self, *, size: str | Size, out: Path, workers: int | None, wandb_mode: str, project: str, entity: str,
                 range_yaml: Path, decay_yaml: Path, n_boot: int, api: Any = None,
                 decay_factors: Any = DEFAULT_DECAY_FACTORS, access: WandbAccess | None = None,
                 check_seconds: float = ONLINE_CHECK_SECONDS, task: str = "", task_args: Any = None,
                 lre_min: float | None = None, lre_max: float | None = None, pack: int | None = None,
                 prove: bool = True, prove_steps: int | None = None, prove_seeds: Any = DEFAULT_SEEDS,
                 prove_lrs: Any = (), zoom: bool = False, extend: bool = False):
        if isinstance(size, str) and size not in SIZES:
            raise LrscanError(f"--size={size!r}: expected one of {', '.join(SIZES)}")
        if wandb_mode == "online" and not project:
            raise LrscanError("--wandb_mode=online needs --project=NAME (the W&B project the runs go to)")
        if n_boot < 0:
            raise LrscanError(f"--n_boot={n_boot}: must be >= 0")
        if workers is not None and workers < 1:
            raise LrscanError(f"--workers={workers}: need at least 1")
        if pack is not None and pack < 1:
            raise LrscanError(f"--pack={pack}: need at least 1 (1: one process per run)")
        self.pack = pack  # runs stacked per process in the sweeps (None: the sweep runner's default for the device)
        self.decay_factors = check_decay_factors(decay_factors)
        self.prove = prove  # the prove stage between the pick and the decay grid (pipeline/study/prove_stage.py)
        if zoom and not prove:
            raise LrscanError("--zoom proves the zoomed range test's candidates: drop --no-prove")
        self.zoom = zoom  # before proving: the zoom sweep around the pick, whose pick gives the candidates
        self.extend = extend  # a range that misses its minimum or its turn is run again where it says (ranges.py)
        self.prove_steps, self.prove_seeds, self.prove_lrs = check_prove_flags(prove_steps, prove_seeds, prove_lrs)
        # both base sweeps are read before anything is written, so a bad one leaves no folder behind
        read_base(range_yaml)
        read_base(decay_yaml)
        # a Size object: a custom study size (the tests' tiny one)
        self.size, self.spec = (size, SIZES[size]) if isinstance(size, str) else ("custom", size)
        self.out, self.workers, self.wandb_mode = out, workers, wandb_mode
        self.project, self.entity = project, entity
        self.range_yaml, self.decay_yaml = range_yaml, decay_yaml
        self.n_boot, self.api = n_boot, api
        # an `api` given (the tests' fakes) stands for checked credentials and a reachable server
        self.access, self.check_seconds = access or WandbAccess(), check_seconds
        self.task, self.task_args = check_task_flags(task, task_args)
        self.lre_range = check_lre_range(lre_min, lre_max)
        self.commands: list[str] = []

    # -- the stages ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from lrscan.analysis.pick import ci_description
        from lrscan.pipeline.sweep import load_sweep

        if self.wandb_mode == "online":
            self._check_online()  # in seconds, before anything is written or run
        if self.task:
            self._check_task()  # a task that does not load is one line, before anything is written or run
        else:
            self._check_data()  # so is a word list the MLP's points would not find
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LrscanError(f"--out={str(self.out)!r}: cannot create it ({e.strerror})") from None
        state = _read_state(self.out)
        t0 = time.monotonic()

        range_path = derive_sweep(self.range_yaml, self.out / "stages" / "lr_range.yaml",
                                  {**self.spec.range_overrides, **self.task_parameters(), **self.range_parameters()},
                                  self.note())
        range_sweep = load_sweep(range_path)
        # the stages this study runs, counted: range test, pick, [zoom], search (proving and the decay grid in one)
        # or, with --no-prove, range test, pick, decay grid, its analysis
        of, done = (4 if self.zoom else 3) if self.prove else 4, [0]

        def stage(text: str) -> None:
            done[0] += 1
            _stage(done[0], text, of)

        stage(f"range test: {len(range_sweep.points)} runs ({range_sweep.key})")
        self.sweep(range_sweep)

        stage("picking the exponent")
        launcher = None
        if self.prove:
            # the search's fork server imports torch (~1 s) on the other core while the pick is read
            from lrscan.pipeline.pack.launcher import PackLauncher

            launcher = PackLauncher()
        range_report = self.analyse(range_sweep, "range")
        if self.extend and range_report.pick is not None:
            range_sweep, range_report = extend_study_range(self, range_sweep, range_report, lambda t: _stage(2, t, of))
        pick = range_report.summary
        if pick.get("best_lre") is None:
            raise LrscanError(f"the range test gave no pick; see {self.out / 'report' / 'range' / 'report.md'}")
        if state.get("range_key") == range_sweep.key and "best_lre" in state:
            best_lre = state["best_lre"]  # a resumed study keeps the lr its decay grid was started with
        else:
            best_lre = float(pick["best_lre"])
            state = {"range_key": range_sweep.key, "best_lre": best_lre}
            self.save_state(state)
        best_lr = 10.0 ** best_lre
        print(f"picked lre = {best_lre:.3f} (95% CI {lre_text(pick.get('best_lre_ci'))}) -> lr = {best_lr:.4g}; "
              f"steepest {lre_text(pick.get('steepest_lre'))}, valley {lre_text(pick.get('valley_lre'))}", flush=True)
        print(f"CI: {ci_description(pick.get('ci_method'))}", flush=True)

        if self.prove:
            from lrscan.pipeline.study.search_report import write_search_report
            from lrscan.pipeline.study.search_stage import run_search_stage

            result = run_search_stage(self, pick, state, stage, launcher)
            summary = write_search_report(self, range_report, result, best_lre, time.monotonic() - t0)
            print(f"\n{summary['opening']}", flush=True)
            print(f"report: {self.out / 'report' / 'report.md'}", flush=True)
            return summary
        decay_sweep = self.decay_sweep(best_lre, "the range test")
        stage(f"decay grid at lr {best_lr:.4g}: {len(decay_sweep.points)} runs ({decay_sweep.key})")
        self.sweep(decay_sweep)

        stage("analysing the decay grid")
        decay_report = self.analyse(decay_sweep, "decay")
        summary = self._write_top(range_report, decay_report, best_lre, time.monotonic() - t0)
        print(f"\n{best_decay_sentence(summary['decay'], summary['chosen_lr'])}", flush=True)
        print(f"report: {self.out / 'report' / 'report.md'}", flush=True)
        return summary

    def decay_base(self) -> dict[str, Any]:
        """The decay grid's sweep YAML as read (checked), before the size's overrides."""
        return read_base(self.decay_yaml)

    def save_state(self, state: Mapping[str, Any]) -> None:
        """state.json: what a resumed study must keep (the pick, the candidates), written whole."""
        _write_state(self.out, state)

    def decay_sweep(self, best_lre: float, by: str = "the range test"):
        """The decay stage's sweep, written to stages/decay_grid.yaml: the decay grid at the chosen lr (`by`).

        The lr is the pick exactly (rounding it would train at an lr nobody picked: round(lr, 6)
        is 0 below lre -6.3), and the decayed lrs follow it as factors, so a decay always lowers it.
        """
        from lrscan.analysis.report import value_label
        from lrscan.pipeline.sweep import load_sweep

        best_lr = 10.0 ** best_lre
        overrides = {**self.spec.decay_overrides, **self.task_parameters(), "lr": {"value": best_lr},
                     "decay_lrs": {"values": decay_lr_values(best_lr, self.decay_factors)}}
        factors = ", ".join(value_label(list(f)) for f in self.decay_factors)
        path = derive_sweep(self.decay_yaml, self.out / "stages" / "decay_grid.yaml", overrides,
                            f"{self.note()}, base lr 10**{best_lre:.3f} from {by}, "
                            f"decay_lrs = that lr x {factors}")
        sweep = load_sweep(path)
        check_decay_points(sweep)
        return sweep

    def task_parameters(self) -> dict[str, Any]:
        """The user's task as fixed parameters of both sweeps; none for the MLP (its sweeps stay as they were)."""
        if not self.task:
            return {}
        return {"task": {"value": self.task}, **({"task_args": {"value": self.task_args}} if self.task_args else {})}

    def range_parameters(self) -> dict[str, Any]:
        """--lre_min/--lre_max as fixed parameters of the range sweep; none when not given (the size's ranges)."""
        if self.lre_range is None:
            return {}
        return {"lre_min": {"value": self.lre_range[0]}, "lre_max": {"value": self.lre_range[1]}}

    def note(self) -> str:
        """The study's size, task and range, for the derived YAMLs' headers."""
        return (f"study size {self.size}" + (f", task {self.task}" if self.task else "")
                + (f", lre {self.lre_range[0]:g}..{self.lre_range[1]:g}" if self.lre_range else ""))

    def _check_task(self) -> None:
        """Build the task once here: a file, function or argument that is wrong fails before any run exists."""
        from lrscan.pipeline.config import TrainConfig
        from lrscan.pipeline.train.task import load_task

        load_task(self.task, TrainConfig().seed, self.task_args)

    def _check_data(self) -> None:
        """Read the word list(s) the MLP's points will read (the range sweep's `data`, else --data's default as a
        point finds it): missing or bad is one line here, not every point of stage 1 failed."""
        from lrscan.pipeline.config import TrainConfig, missing_data_message
        from lrscan.pipeline.train.data import read_words

        parameter = {**read_base(self.range_yaml)["parameters"], **self.spec.range_overrides}.get("data") or {}
        paths = parameter.get("values") or [parameter.get("value") or TrainConfig().data]
        for path in paths:
            if not Path(str(path)).exists():
                raise LrscanError(missing_data_message(str(path)))
            read_words(path)

    def _check_online(self) -> None:
        if self.api is None:
            check_credentials(self.access)
            check_reachable(self.access.base_url, self.check_seconds)
            self.api = public_api(self.access, self.check_seconds)
        if not self.entity:
            self.entity = default_entity(self.api)  # the user's own, as `wandb sweep` would use

    def sweep(self, sweep) -> None:
        """Run a stage's sweep through the local runner (finished points are not run again); one line when not all
        its points finished."""
        from lrscan.pipeline.sweep import run_sweep, unfinished_message

        out = self.out / "sweeps"
        env_note = f"WANDB_MODE={self.wandb_mode} " + (f"WANDB_PROJECT={self.project} " if self.project else "")
        quoted = f"{shlex.quote(sweep.path)} --out {shlex.quote(str(out))}" + (
            f" --pack {self.pack}" if self.pack is not None else "")
        self.commands.append(f"{env_note}python -m lrscan.pipeline.sweep {quoted}")
        code = run_sweep(sweep, str(out), workers=self.workers, wandb_mode=self.wandb_mode, pack=self.pack)
        if code != 0:
            why = (unfinished_message(str(out), sweep)
                   or f"{sweep.key}: points that did not finish; run the same command again to retry them")
            raise LrscanError(f"sweep {why} (manifest: {out / sweep.key / 'manifest.jsonl'})")

    def analyse(self, sweep, name: str, **report_args: Any):
        """The report of a stage's sweep (report/<name>/), read back from its runs as `python -m analysis` would."""
        block_steps = report_args.pop("block_steps", self.spec.block_steps)
        from lrscan.analysis.report import adopt_unmarked_report, write_report
        from lrscan.analysis.sources import load_runs

        if self.wandb_mode == "online":
            if self.api is None or not self.entity:
                self._check_online()
            source = f"{self.entity}/{self.project}"
        else:
            source = str(self.out / "sweeps" / sweep.key / "wandb")
        dest = self.out / "report" / name
        adopt_unmarked_report(dest)  # the study's own report from before reports carried a marker
        loaded = load_runs(source, group=sweep.key, api=self.api)
        self.commands.append(f"lrscan analyze {shlex.quote(source)} --group {sweep.key} "
                             f"--out {shlex.quote(str(dest))} --block-steps {block_steps}")
        return write_report(dest, loaded, block_steps=block_steps, n_boot=self.n_boot, source=source,
                            filters={"group": sweep.key}, **report_args)

    def _write_top(self, range_report, decay_report, best_lre: float, seconds: float) -> dict[str, Any]:
        """--no-prove: summary.json and report.md from the range report and the decay grid's (a searched study's
        are pipeline/study/search_report.py's)."""
        from lrscan.analysis.pick import ci_description

        folder = self.out / "report"
        rs, ds = range_report.summary, decay_report.summary
        best_lr = 10.0 ** best_lre
        summary = {
            "size": self.size,
            "task": self.task or "makemore MLP",
            "task_args": self.task_args,
            "wandb_mode": self.wandb_mode,
            "seconds": round(seconds, 1),
            "best_lre": best_lre,
            "best_lr": best_lr,
            "best_lre_ci": rs.get("best_lre_ci"),
            "ci_method": rs.get("ci_method"),
            "n_seeds": rs.get("n_seeds"),
            # lre per suggester, "minimum" kept beside "min_loss" (its old name) for readers of older summaries
            "suggesters": rs.get("suggesters") or {"min_loss": rs.get("best_lre"), "minimum": rs.get("best_lre"),
                                                   "steepest": rs.get("steepest_lre"), "valley": rs.get("valley_lre")},
            "chosen_lr": best_lr,
            "chosen_by": "pick",
            "prove": [],  # nothing proven: the search did not run
            "range": {"report": "range/report.md", "counts": rs.get("counts"), "per_run": rs.get("per_run")},
            "decay": {"report": "decay/report.md", "counts": ds.get("counts"), "lr": best_lr,
                      "decay_factors": [list(f) for f in self.decay_factors], **(ds.get("decay") or {})},
            "notes": list(dict.fromkeys([*rs.get("notes", []), *ds.get("notes", [])])),
            "commands": list(self.commands),
        }
        summary["opening"] = (f"The range test picked lr {best_lr:.4g} (min loss); --no-prove: the decay grid "
                              f"trained at it unproven.")
        atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str))
        figures = [f for f in range_report.files if f.endswith(".png")]
        decay_figs = [f for f in decay_report.files if f.endswith(".png")]
        lines = [
            f"# lrscan study ({self.size}" + (f", task {self.task}" if self.task else "") + ")",
            "",
            f"Picked exponent **{best_lre:.3f}** (95% CI {lre_text(summary['best_lre_ci'])}), lr = {best_lr:.4g}. "
            f"Other suggesters: steepest {lre_text(rs.get('steepest_lre'))}, valley {lre_text(rs.get('valley_lre'))}.",
            "",
            f"How the CI was made: {ci_description(summary['ci_method'])}.",
            "",
            *[f"![{f}](range/{f})" for f in figures],
            "",
            best_decay_sentence(summary["decay"], best_lr),
            "",
            decay_table_markdown(summary["decay"], best_lr),
            "",
            *[f"![{f}](decay/{f})" for f in decay_figs],
            "",
            "Full reports: [range test](range/report.md), [decay grid](decay/report.md).",
            "",
        ]
        if summary["notes"]:
            lines += ["## Notes", "", *[f"- {n}" for n in summary["notes"]], ""]
        lines += ["## Redo each stage by hand", "", "```", *self.commands, "```", ""]
        atomic_write_text(folder / "report.md", "\n".join(lines))
        return summary


def extend_study_range(study: Any, sweep: Any, report: Any, stage: Any) -> tuple[Any, Any]:
    """The study's --extend: while the range sweep's curve misses its minimum or its turn (at most
    `MAX_EXTENSIONS` times), run the range `check_range` names (stages/lr_range_extended_N.yaml, the
    range sweep with those ends and as many steps per decade) and read its pick instead. Returns the
    last (sweep, report). Each derived file is the same text on a resume, so a resumed study resumes it."""
    from lrscan.pipeline.study.ranges import MAX_EXTENSIONS, STUDY, check_range, next_range_arguments
    from lrscan.pipeline.sweep import load_sweep

    for n in range(1, MAX_EXTENSIONS + 1):
        per_run = report.pick.per_run
        # the runs' ranges (categorical when read from runs): the widest span they cover
        low, high = float(per_run["lre_min"].astype(float).min()), float(per_run["lre_max"].astype(float).max())
        check = check_range(report.pick, per_run, lre_min=low, lre_max=high, where=STUDY)
        if check.holds:
            return sweep, report
        steps = max(int(p.get("steps", 1000)) for p in sweep.points)
        nxt = next_range_arguments(check, steps)
        print(f"{STUDY}: {check.message}", flush=True)
        overrides = {**study.spec.range_overrides, **study.task_parameters(),
                     **{k: {"value": v} for k, v in nxt.items()}}
        path = derive_sweep(study.range_yaml, study.out / "stages" / f"lr_range_extended_{n}.yaml", overrides,
                            f"{study.note()}, --extend {n}: lre {nxt['lre_min']:g}..{nxt['lre_max']:g}")
        sweep = load_sweep(path)
        stage(f"--extend: the range test again over lr {10 ** nxt['lre_min']:.3g}..{10 ** nxt['lre_max']:.3g}, "
              f"{len(sweep.points)} runs ({sweep.key})")
        study.sweep(sweep)
        report = study.analyse(sweep, f"range_extended_{n}")
    return sweep, report
