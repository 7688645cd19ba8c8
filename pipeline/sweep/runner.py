"""The process pool that drains a sweep's points: one process per point, with leases, signals and progress.

    run_sweep(load_sweep("sweeps/lr_range.yaml"), "runs")   # what `python -m pipeline.sweep` runs

Several runners may share one sweep folder (one machine or many on a shared filesystem): each claims
points atomically (`pipeline.sweep.claims`), renews a lease while its program runs, takes over a
point whose worker vanished (resuming its run from the checkpoint), and never runs a point twice at
the same time. A worker that died on this same host (killed runner, closed terminal) is seen dead at
once and its points are taken over without waiting out the lease; one on another host is waited
for, and the runner says for what and how long. Re-running a sweep skips finished points and retries
failed, crashed and killed ones; when points did not finish, `unfinished_message` says why in one
line (the first one's last log line).

Ctrl-C, SIGTERM or SIGHUP asks every program to stop (they save a checkpoint), waits
`term_timeout_seconds`, then kills; a second signal kills at once. The runner's own death takes its
programs with it (Linux), so a taker never resumes a run that is still being written.

A job is one process: one point's (`Runner._start`, the YAML's command), or a pack's (`_start_pack`:
`python -m pipeline.pack POINTS.json` training several points of lrscan's trainer stacked, see
`pipeline.sweep.packs`). A pack's job holds one claim per member, all taken before it starts,
renews them together, and ends each with its own state: the pack writes one end file per member
when that member's run ends, and a member whose end file says finished is recorded finished at
once, while its packmates go on. The manifest, the claims, retries and resumption stay per point.
What a job is and how its process is tied to the runner: jobs.py; the progress shown: progress.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep.claims import (
    CRASHED,
    FAILED,
    FINISHED,
    KILLED,
    PENDING,
    RUNNING,
    Claim,
    ClaimStore,
    PointState,
    here,
)
from lrscan.pipeline.sweep.command import args_json_path, build_command, check_sweep, pack_env, point_env, run_id_for
from lrscan.pipeline.sweep.jobs import Job, die_with_parent, iso, killpg
from lrscan.pipeline.sweep.manifest import DEFAULT_OUT, manifest_rows, prepare_folder, sweep_folder, write_manifest
from lrscan.pipeline.sweep.packs import (
    PACK_MODULE,
    check_pack,
    default_pack,
    gpu_visible,
    pack_keys,
    pack_sizes,
    read_end_file,
    trainer_args,
    write_points_file,
)
from lrscan.pipeline.sweep.progress import LineProgress, show
from lrscan.pipeline.sweep.spec import Sweep

PROG = "lrscan sweep"  # how errors and notices start: the command that runs it, installed
EXIT_CHECK_SECONDS = 0.05  # how soon a finished process frees its slot


class Runner:
    """Drains the points of one sweep folder (or just the given indices) with a pool of processes."""

    def __init__(self, sweep: Sweep, folder: str, *, workers: int, lease_seconds: float, wandb_mode: str,
                 term_timeout_seconds: float = 30.0, poll_seconds: float = 0.5, indices: Sequence[int] | None = None,
                 max_attempts_per_point: int = 3, progress: bool = True, environ: Mapping[str, str] | None = None,
                 pack: int = 1):
        self.sweep = sweep
        self.folder = folder
        self.workers = max(1, workers)
        self.wandb_mode = wandb_mode
        self.term_timeout_seconds = term_timeout_seconds
        self.poll_seconds = poll_seconds
        self.indices = list(range(len(sweep.points))) if indices is None else list(indices)
        self.max_attempts_per_point = max_attempts_per_point
        self.progress = progress
        self.environ = dict(os.environ if environ is None else environ)
        self.store = ClaimStore(folder, lease_seconds)
        self.jobs: dict[int, Job] = {}          # point index -> the job holding its claim (a pack: each member's)
        self._running: list[Job] = []           # every started process not yet reaped
        self.pack = max(1, pack)
        # each point's pack key (None: it runs alone), why the ones that could be packed are not, slots a pack takes
        self.packing = pack_keys(sweep, packing=self.pack > 1)
        self.keys, self.alone = self.packing.keys, self.packing.alone
        self.started_here: dict[int, int] = {}   # attempts this runner started, per point
        self.retry_failed: set[int] = set()      # points that had failed before this runner started
        self.stop_signal: int | None = None
        self._last_manifest: list[tuple[int, str]] | None = None
        self._preexec = die_with_parent()
        self._bar: Any = None
        self._waits_told: set[tuple[int, int]] = set()  # (index, gen) of claims we said we wait for

    # -- signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:
            for job in self._live_jobs():  # second signal: no more waiting
                killpg(job.proc, signal.SIGKILL)
        self.stop_signal = signum

    # -- one point

    def _start(self, st: PointState) -> None:
        """Claim the point's next attempt and start its process (a pack's process would hold several claims)."""
        index = st.index
        run_id = run_id_for(self.sweep.key, index)
        gen = st.gen + 1
        log_rel = os.path.join("logs", f"{run_id}.g{gen}.log")
        json_file = args_json_path(self.folder, self.sweep.key, run_id)
        argv, args_json = build_command(self.sweep.command, self.sweep.program, self.sweep.points[index], json_file)
        info = {"run_id": run_id, "started_at": iso(time.time()), "log": log_rel, "command": argv}
        claim = self._claim(st, info)
        if claim is None:
            return  # another runner was faster
        if "${args_json_file}" in self.sweep.command:
            os.makedirs(os.path.dirname(json_file), exist_ok=True)
            Path(json_file).write_text(args_json)
        env = point_env(self.environ, folder=self.folder, sweep=self.sweep, index=index, run_id=run_id,
                        retry=gen > 0, wandb_mode=self.wandb_mode)
        self._launch({index: claim}, argv, env, log_rel)

    def _claim(self, st: PointState, info: Mapping[str, Any]) -> Claim | None:
        """The point's next attempt, claimed, or taken over from a worker that is gone; None if another runner won."""
        if st.state != RUNNING:
            return self.store.claim(st.index, st.gen + 1, info)
        claim = self.store.take_over(st, info)  # its worker is gone (lease expired, or seen dead on this host)
        if claim is not None:
            why = (f"its worker {st.claim.get('worker')} died (seen dead on this host)" if st.owner_dead else
                   f"no lease renewal from {st.claim.get('worker')} for {st.lease_age_seconds:.0f} s")
            self._say(f"{PROG}: point {st.index} ({info['run_id']}): {why}; taking it over now "
                      f"(attempt {st.gen + 2})")
        return claim

    def _start_pack(self, group: Sequence[PointState]) -> None:
        """Claim every member's next attempt, then start one `python -m pipeline.pack` process for those claimed."""
        first = run_id_for(self.sweep.key, group[0].index)
        tag = f"{first}.pack.g{group[0].gen + 1}"
        log_rel = os.path.join("logs", f"{tag}.log")
        points_file = os.path.join(self.folder, "packs", f"{tag}.json")
        argv = [sys.executable, "-m", PACK_MODULE, points_file]
        run_ids = [run_id_for(self.sweep.key, st.index) for st in group]
        claims: dict[int, Claim] = {}
        members = []
        for st in group:  # every claim is taken before the pack starts
            run_id = run_id_for(self.sweep.key, st.index)
            info = {"run_id": run_id, "started_at": iso(time.time()), "log": log_rel, "command": argv,
                    "pack": run_ids}
            claim = self._claim(st, info)
            if claim is None:
                continue  # another runner was faster: the pack goes without this point
            claims[st.index] = claim
            end_file = os.path.join(self.folder, "packs", f"{run_id}.g{claim.gen}.end.json")
            members.append((run_id, trainer_args(self.sweep.points[st.index]), end_file))
        if not claims:
            return
        write_points_file(points_file, members)
        env = pack_env(self.environ, folder=self.folder, sweep=self.sweep, wandb_mode=self.wandb_mode)
        self._launch(claims, argv, env, log_rel, end_files={i: m[2] for i, m in zip(claims, members)},
                     slots=self._pack_slots(self.keys[group[0].index]))

    def _pack_slots(self, key: str | None) -> int:
        return min(self.packing.slots_of(key), self.workers)

    def _free_slots(self) -> int:
        return self.workers - sum(job.slots for job in self._running)

    def _launch(self, claims: dict[int, Claim], argv: list[str], env: dict[str, str], log_rel: str,
                end_files: dict[int, str] | None = None, slots: int = 1) -> None:
        log = open(os.path.join(self.folder, log_rel), "ab")
        for index in claims:
            self.started_here[index] = self.started_here.get(index, 0) + 1
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    process_group=0, preexec_fn=self._preexec)
        except OSError as e:
            log.write(f"{PROG}: cannot start {argv!r}: {e}\n".encode())
            log.close()
            for index, claim in claims.items():
                self.store.end(index, claim.gen, {"state": FAILED, "exit_code": None, "ended_at": iso(time.time()),
                                                  "seconds": 0.0, "reason": f"cannot start: {e}"})
            return
        for claim in claims.values():
            self.store.note_program(claim, proc.pid)  # lets a runner on this host see when it is gone
        now = time.monotonic()
        job = Job(dict(claims), proc, log, now, time.time(), now, end_files=dict(end_files or {}), slots=slots)
        for index in claims:
            self.jobs[index] = job
        self._running.append(job)

    def _live_jobs(self) -> list[Job]:
        return list(self._running)

    def _end_point(self, job: Job, index: int, rc: int | None, reason: str = "") -> None:
        """Record how a point's attempt ended: from its pack's end file when there is one, else from the exit code."""
        claim = job.claims.pop(index)
        self.jobs.pop(index, None)
        said = read_end_file(job.end_files[index]) if index in job.end_files else {}
        if said.get("state") in (FINISHED, FAILED, KILLED):
            state, rc = said["state"], said.get("exit_code", rc)
            reason = reason or said.get("reason", "")
        elif rc == 0:
            # a pack that exits 0 said how every member ended; one without its word did not finish
            state = CRASHED if index in job.end_files else FINISHED
            reason = reason or ("the pack exited without saying how this run ended" if index in job.end_files else "")
        elif job.stop_sent is not None:
            state = KILLED
        elif rc is not None and rc > 0:
            state = FAILED
        else:
            state = CRASHED
        record = {"state": state, "exit_code": rc, "ended_at": iso(time.time()),
                  "seconds": round(time.monotonic() - job.started, 3)}
        if reason:
            record["reason"] = reason
        self.store.end(index, claim.gen, record)

    def _finish(self, job: Job, rc: int, reason: str = "", reasons: Mapping[int, str] | None = None) -> None:
        self._running.remove(job)
        job.log.close()
        for index in list(job.claims):
            self._end_point(job, index, rc, (reasons or {}).get(index, reason))

    def _reap(self) -> None:
        for job in self._live_jobs():
            rc = job.proc.poll()
            if rc is not None:
                self._finish(job, rc)
                continue
            # a pack member whose run finished is recorded at once; its packmates go on
            for index in [i for i in job.claims if i in job.end_files]:
                if read_end_file(job.end_files[index]).get("state") == FINISHED:
                    self._end_point(job, index, None)

    def _renew(self) -> None:
        now = time.monotonic()
        for job in self._live_jobs():
            if now - job.last_renew < self.store.lease_seconds / 4:
                continue
            job.last_renew = now
            lost = [index for index, claim in job.claims.items() if not self.store.renew(claim)]
            if lost:
                # a lease is gone (we were stalled past it): someone may run that point now, so stop ours
                # (a pack stops with it: its other members resume from their checkpoints on their next attempt)
                killpg(job.proc, signal.SIGKILL)
                job.proc.wait()
                job.stop_sent = now
                lost_ids = ", ".join(run_id_for(self.sweep.key, i) for i in lost)
                self._finish(job, job.proc.returncode, reason=f"stopped with its pack: lease lost for {lost_ids}",
                             reasons=dict.fromkeys(lost, "lease lost"))

    # -- policy

    def _claimable(self, st: PointState) -> bool:
        if st.index in self.jobs or self.started_here.get(st.index, 0) >= self.max_attempts_per_point:
            return False
        if st.state == PENDING:
            return True
        if st.state == RUNNING:
            return st.expired or st.owner_dead
        if st.state in (CRASHED, KILLED):
            return True
        if st.state == FAILED:
            # a failure from an earlier session is retried once; one that happened while we run is final
            return st.index in self.retry_failed and self.started_here.get(st.index, 0) == 0
        return False

    def _tell_waits(self, states: Sequence[PointState]) -> None:
        """One line per claim of another worker that keeps this runner waiting: for what, and how long."""
        for i in self.indices:
            st = states[i]
            if st.state != RUNNING or i in self.jobs or self._claimable(st) or (i, st.gen) in self._waits_told:
                continue
            if self.started_here.get(i, 0) >= self.max_attempts_per_point:
                continue  # we would not take it over anyway
            self._waits_told.add((i, st.gen))
            self._say(f"{PROG}: waiting for point {i} ({run_id_for(self.sweep.key, i)}): {self._wait_reason(st)}")

    def _wait_reason(self, st: PointState) -> str:
        worker = st.claim.get("worker") or "another runner"
        owner = st.claim.get("owner") or {}
        lapse = (f"its lease lapses unrenewed (in {max(0.0, self.store.lease_seconds - st.lease_age_seconds):.0f} s "
                 f"at the earliest; lease {self.store.lease_seconds:g} s)")
        if st.program_alive:
            return (f"its worker {worker} died, but the program it started still runs on this host; "
                    f"until that program exits, or {lapse}")
        if here(owner):
            return f"held by {worker}, alive on this host; until it ends, or {lapse}"
        if owner.get("host", worker.split(":")[0]) == socket.gethostname():
            return (f"held by {worker}, of another boot or PID namespace (not checkable from here); "
                    f"until it ends, or {lapse}")
        return f"held by {worker} on another host (not checkable from here); until it ends, or {lapse}"

    def _say(self, line: str) -> None:
        if self._bar is not None and hasattr(self._bar, "write"):
            self._bar.write(line, file=sys.stderr)  # tqdm: print above the bar
        else:
            print(line, file=sys.stderr, flush=True)

    def _settled(self, st: PointState) -> bool:
        """Nothing more will happen to this point in this session (as far as this runner knows)."""
        return st.state != RUNNING and st.state != PENDING and not self._claimable(st)

    # -- the loop

    def run(self) -> int:
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        bar = None
        try:
            states = self.store.states(len(self.sweep.points))
            self.retry_failed = {st.index for st in states if st.state == FAILED}
            self._tell_alone()
            if self.progress:
                from tqdm import tqdm

                tqdm.monitor_interval = 0  # no monitor thread: children are forked from this process
                initial = sum(states[i].state == FINISHED for i in self.indices)
                if sys.stderr.isatty():
                    bar = tqdm(total=len(self.indices), desc=self.sweep.key, unit="run", dynamic_ncols=True,
                               initial=initial)
                else:
                    bar = LineProgress(self.sweep.key, len(self.indices), initial)
                self._bar = bar
            while True:
                self._reap()
                if self.stop_signal is not None:
                    self._shutdown()
                    break
                self._renew()
                states = self.store.states(len(self.sweep.points))
                self._start_some([states[i] for i in self.indices])
                states = self.store.states(len(self.sweep.points))
                if self._free_slots() > 0:  # idle slots: say what keeps them idle
                    self._tell_waits(states)
                self._write_manifest(states)
                if bar is not None:
                    show(bar, [states[i] for i in self.indices])
                if not self._running and all(self._settled(states[i]) for i in self.indices):
                    break
                self._sleep_until_one_exits(self.poll_seconds)
            states = self.store.states(len(self.sweep.points))
            self._write_manifest(states, force=True)
            if bar is not None:
                show(bar, [states[i] for i in self.indices])
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            self._bar = None
            self.store.close()
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 0 if all(states[i].state == FINISHED for i in self.indices) else 1

    def _sleep_until_one_exits(self, seconds: float) -> None:
        # a round's work (claims, leases, manifest) every `seconds`, but a process that ends frees its
        # slot at once: checked every 50 ms (a waitpid each), not up to a whole poll interval later
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.stop_signal is None:
            if any(job.proc.poll() is not None for job in self._running):
                return
            time.sleep(min(EXIT_CHECK_SECONDS, max(0.0, deadline - time.monotonic())))

    def _start_some(self, mine: Sequence[PointState]) -> None:
        """Fill the free worker slots in W&B's order: a point alone, or a pack of it and its compatible points."""
        claimable = [st for st in mine if self._claimable(st)]
        free = self._free_slots()
        # pack sizes are set once per round from what is claimable now, so every free slot gets work
        sizes: dict[str, int] = {}
        for st in claimable:
            key = self.keys[st.index]
            if key is not None:
                sizes[key] = sizes.get(key, 0) + 1
        sizes = {key: pack_sizes(n, self.pack, free, self._pack_slots(key)) for key, n in sizes.items()}
        while free > 0 and claimable:
            st = claimable.pop(0)
            key = self.keys[st.index]
            mates = [] if key is None else \
                [other for other in claimable if self.keys[other.index] == key][:sizes[key] - 1]
            if not mates:
                self._start(st)
                free -= 1
            elif free >= self._pack_slots(key):
                claimable = [other for other in claimable if other not in mates]
                self._start_pack([st, *mates])
                free -= self._pack_slots(key)

    def _tell_alone(self) -> None:
        """Once per session, when packing: how a task's packs use the slots; which points run alone, and why."""
        for line in self.packing.slot_lines(self.sweep, self.workers):
            self._say(f"{PROG}: {line}")
        whys: dict[str, list[int]] = {}
        for i in (i for i in self.indices if i in self.alone):
            whys.setdefault(self.alone[i], []).append(i)
        for why, points in whys.items():
            which = "every point" if len(points) == len(self.sweep.points) else \
                f"point(s) {', '.join(map(str, points[:10]))}{' ...' if len(points) > 10 else ''}"
            self._say(f"{PROG}: {which} of {self.sweep.key} run(s) one process per point: {why}")

    def _shutdown(self) -> None:
        """Ctrl-C / SIGTERM: ask every program to stop, wait a while, then kill; record them as killed."""
        now = time.monotonic()
        for job in self._live_jobs():
            job.stop_sent = now
            killpg(job.proc, signal.SIGTERM)
        deadline = now + self.term_timeout_seconds
        while self._running and time.monotonic() < deadline:
            self._reap()
            self._renew_all_quietly()
            time.sleep(min(self.poll_seconds, 0.2))
        for job in self._live_jobs():
            killpg(job.proc, signal.SIGKILL)
            job.proc.wait()
            self._finish(job, job.proc.returncode)

    def _renew_all_quietly(self) -> None:
        # keep leases alive while programs save their checkpoints, so nobody takes them over meanwhile
        now = time.monotonic()
        for job in self._live_jobs():
            if now - job.last_renew >= self.store.lease_seconds / 4:
                job.last_renew = now
                for claim in job.claims.values():
                    self.store.renew(claim)

    def _write_manifest(self, states: Sequence[PointState], force: bool = False) -> None:
        snapshot = [(st.gen, st.state) for st in states]
        if force or snapshot != self._last_manifest:
            write_manifest(self.folder, manifest_rows(self.sweep, states))
            self._last_manifest = snapshot

def default_workers() -> int:
    """What the machine (or the Slurm allocation) can take: one single-threaded run per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_sweep(sweep: Sweep, out: str = DEFAULT_OUT, *, workers: int | None = None, lease_seconds: float = 60.0,
              wandb_mode: str | None = None, indices: Sequence[int] | None = None, term_timeout_seconds: float = 30.0,
              poll_seconds: float = 0.5, progress: bool = True, pack: int | None = None) -> int:
    """Run a checked sweep in `<out>/<key>/`; returns the exit code (0: every point finished).

    pack: up to this many compatible points of lrscan's trainer train stacked in one process
    (`pipeline.sweep.packs`); 1: one process per point; None: chosen for the points' device.
    """
    check_pack(pack)
    check_sweep(sweep, os.environ)
    for i in indices or ():
        if not 0 <= i < len(sweep.points):
            raise LrscanError(f"--index {i}: {sweep.path} has {len(sweep.points)} points (0..{len(sweep.points) - 1})")
    folder = sweep_folder(out, sweep)
    prepare_folder(folder, sweep)
    runner = Runner(sweep, folder, workers=workers or default_workers(), lease_seconds=lease_seconds,
                    wandb_mode=wandb_mode or os.environ.get("WANDB_MODE") or "offline", indices=indices,
                    term_timeout_seconds=term_timeout_seconds, poll_seconds=poll_seconds, progress=progress,
                    pack=pack if pack is not None else default_pack(sweep, gpu_visible()))
    return runner.run()
