"""Packed sweeps through the runner: points of the real trainer stacked in one process, each its own run,
claim and manifest row; packs killed and resumed; points that cannot be packed run alone, and the runner says why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lrscan.analysis import load_runs
from lrscan.pipeline import keys
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.sweep import packs
from lrscan.pipeline.sweep.__main__ import main
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.manifest import read_manifest
from lrscan.pipeline.sweep.packs import (
    CPU_PACK,
    GPU_PACK,
    LOGGER_STEP_SECONDS,
    ONE_SLOT_RATIO,
    PACK_SLOTS,
    default_pack,
    pack_keys,
    pack_plan,
    pack_sizes,
    slots_for_step,
)
from lrscan.pipeline.sweep.runner import run_sweep
from lrscan.pipeline.sweep.spec import load_sweep
from lrscan.pipeline.train import checkpoint
from tests.pipeline.pack.test_functional import NET
from tests.pipeline.sweep.fakes import cli, records, wait_for, write_sweep

REPO = Path(__file__).resolve().parents[3]


def trainer_sweep(folder: Path, words: Path, parameters: str, name: str = "packed", command: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        # tiny runs of the real trainer
        name: {name}
        program: pipeline/train/__main__.py
        command: {command or '["${env}", python3, -m, lrscan.pipeline.train, "${args}"]'}
        method: grid
        parameters:
          data: {{value: {words}}}
          n_embd: {{value: 2}}
          n_hidden: {{value: 16}}
          samples: {{value: 0}}
        """) + textwrap.indent(textwrap.dedent(parameters), "  "))
    return path


@pytest.mark.slow
def test_a_trainer_sweep_trains_in_packs_each_point_its_own_run_and_manifest_row(in_tmp, words_file):
    path = trainer_sweep(in_tmp, words_file, """\
        steps: {value: 300}
        lre_min: {values: [-3.0, -2.0]}
        seed: {values: [1, 2]}
        """)
    sweep = load_sweep(path)
    # the same sweep in packs of 2 (4 points, 4 workers: two packs of two workers' slots each), then one
    # process per point
    assert run_sweep(sweep, "packed", workers=4, pack=4, poll_seconds=0.05, progress=False) == 0
    assert run_sweep(sweep, "alone", workers=2, pack=1, poll_seconds=0.05, progress=False) == 0
    packed, alone = in_tmp / "packed" / sweep.key, in_tmp / "alone" / sweep.key
    rows = read_manifest(packed)
    ids = [run_id_for(sweep.key, i) for i in range(4)]
    assert rows["run_id"].tolist() == ids and (rows["state"] == "finished").all() and (rows["attempts"] == 1).all()
    assert rows["pack"].tolist() == [ids[:2], ids[:2], ids[2:], ids[2:]]
    assert read_manifest(alone)["pack"].isna().all()
    assert sorted(p.name for p in (packed / "logs").iterdir()) == [f"{ids[0]}.pack.g0.log", f"{ids[2]}.pack.g0.log"]
    got, want = load_runs(packed / "wandb"), load_runs(alone / "wandb")
    runs = got.runs.set_index("run_id").sort_index()
    assert list(runs.index) == ids and (runs["group"] == sweep.key).all() and (runs["state"] == "finished").all()
    assert all("packed" in t for t in runs["tags"])
    for run_id in ids:
        g, w = (f.steps[f.steps["run_id"] == run_id] for f in (got, want))
        assert g["step"].tolist() == w["step"].tolist()
        np.testing.assert_allclose(g[keys.LOSS].to_numpy(), w[keys.LOSS].to_numpy(), rtol=1e-5)
    cols = ["seed", "lre_min", keys.DEV_LOSS, keys.BEST_SMOOTH_LOSS, keys.FINAL_STEP]
    np.testing.assert_allclose(runs[cols].to_numpy(float), want.runs.set_index("run_id").sort_index()[cols].to_numpy(
        float), rtol=1e-5)


def _pack_pid(folder: Path) -> int:
    return json.loads((folder / "claims" / "00000.g000.proc").read_text())["pid"]


def _process_state(pid: int) -> str:
    # /proc/PID/status: "State:\tT (stopped)" once a SIGSTOP has landed
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    return line.split()[1]


def _signal_pending(pid: int, sig: int) -> bool:
    # /proc/PID/status: SigPnd (thread) and ShdPnd (process) are hex masks of pending signals
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd", "ShdPnd"))]
    return any(m & (1 << (sig - 1)) for m in masks)


@pytest.mark.slow
def test_a_killed_runner_leaves_its_pack_to_the_next_one_and_every_member_resumes(in_tmp, words_file):
    steps = 20000
    path = trainer_sweep(in_tmp, words_file, f"""\
        schedule: {{value: constant}}
        steps: {{value: {steps}}}
        ckpt_every_steps: {{value: 1000}}
        log_chunk_steps: {{value: 100}}
        seed: {{values: [1, 2, 3]}}
        """, name="killed")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    ids = [run_id_for(sweep.key, i) for i in range(3)]
    ckpts = [folder / "checkpoints" / f"{r}.pt" for r in ids]
    runner = cli(str(path), "--workers", "1", "--pack", "3", "--no-progress", cwd=in_tmp, start_new_session=True)

    def all_checkpointed() -> bool:
        try:
            return all(not checkpoint.load(p)["finished"] for p in ckpts)
        except Exception:
            return False

    wait_for(all_checkpointed, 300)
    pack = _pack_pid(folder)
    os.kill(pack, signal.SIGSTOP)  # frozen mid-run: the kill below cannot land after its end
    os.killpg(runner.pid, signal.SIGKILL)  # the runner dies; its pack dies with it (PR_SET_PDEATHSIG)
    runner.communicate(timeout=60)
    wait_for(lambda: not Path(f"/proc/{pack}").exists() or "Z" in Path(f"/proc/{pack}/stat").read_text().split()[2],
             60)
    assert (read_manifest(folder)["state"] == "running").all()

    # the next runner on this host sees the owner dead, takes every member over, and the pack resumes them
    assert run_sweep(sweep, "runs", workers=1, pack=3, poll_seconds=0.05, progress=False) == 0
    rows = read_manifest(folder)
    assert (rows["state"] == "finished").all() and (rows["attempts"] == 2).all()
    log = (folder / rows["log"][0]).read_text()
    for run_id in ids:
        assert f"resuming run {run_id} at step" in log
        segments = [read_run_file(p) for p in sorted((folder / "wandb").glob(f"offline-run-*-{run_id}/*.wandb"))]
        steps_seen = np.concatenate([s.history["step"] for s in segments])
        assert len(segments) == 2 and sorted(steps_seen.tolist()) == list(range(steps)), "a lost or repeated step"


def test_points_that_cannot_be_packed_run_one_per_process_and_the_runner_says_why_once(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sweep = load_sweep(path)
    assert run_sweep(sweep, "runs", workers=1, pack=8, poll_seconds=0.05, progress=False) == 0
    err = capsys.readouterr().err
    assert err.count(f"every point of {sweep.key} run(s) one process per point: packs run lrscan's trainer") == 1
    starts = records(in_tmp / "runs" / sweep.key, "starts")
    assert sorted(starts) == [run_id_for(sweep.key, i) for i in range(3)]  # one process each, under its own run id


def test_which_points_can_share_a_pack(in_tmp, words_file):
    path = trainer_sweep(in_tmp, words_file, """\
        steps: {values: [100, 200]}
        seed: {values: [1, 2]}
        """)
    found = pack_keys(load_sweep(path))
    keys_, alone = found.keys, found.alone
    # names sorted, the last varies fastest: steps 100, 200, 100, 200
    assert keys_[0] == keys_[2] != keys_[1] == keys_[3] and alone == {}
    # a command that adds to the trainer's, or a task of the user's own: one process per point, said why
    custom = trainer_sweep(in_tmp, words_file, "seed: {values: [1, 2]}\n", name="custom",
                           command='["${env}", python3, -m, lrscan.pipeline.train, --samples=1, "${args}"]')
    found = pack_keys(load_sweep(custom))
    keys_, alone = found.keys, found.alone
    assert keys_ == [None, None] and "not the trainer's standard one" in alone[0]
    task = trainer_sweep(in_tmp, words_file, "seed: {values: [1, 2]}\ntask: {value: 'mytask.py:make'}\n",
                         name="task")
    found = pack_keys(load_sweep(task))
    keys_, alone = found.keys, found.alone
    assert keys_ == [None, None] and "trains its own task (mytask.py:make)" in alone[1]
    assert "its task cannot be built here" in alone[1]


@pytest.mark.slow
def test_a_task_packs_when_torch_func_can_step_it_else_each_point_runs_alone_saying_why(in_tmp, words_file):
    (in_tmp / "net.py").write_text(NET)
    # SGD, Adam/AdamW and BatchNorm (its buffers carried per member) pack; another optimizer or a buffer that
    # forward replaces does not
    for task_args, why in (("{}", ""), ("{'opt': 'adamw'}", ""), ("{'norm': True}", ""),
                           ("{'opt': 'rmsprop'}", "its optimizer is RMSprop"),
                           ("{'counter': True}", "its model's buffer")):
        path = trainer_sweep(in_tmp, words_file, f"seed: {{values: [1, 2, 3]}}\ntask: {{value: 'net.py:make'}}\n"
                             f"task_args: {{value: \"{task_args}\"}}\n", name="task")
        packing = pack_keys(load_sweep(path))
        keys_, alone = packing.keys, packing.alone
        if not why:
            assert alone == {} and keys_[0] is not None and keys_[0] == keys_[1] == keys_[2]
            # the task check timed one member's step for the runner: a pack's slots follow from it
            assert packing.step_seconds[keys_[0]] > 0 and packing.slots[keys_[0]] in (1, PACK_SLOTS)
        else:
            assert keys_ == [None] * 3 and set(alone) == {0, 1, 2} and len(set(alone.values())) == 1
            assert why in alone[0] and "net.py:make" in alone[0]


def test_pack_sizes_give_every_free_worker_a_pack_and_plans_are_fixed_in_order():
    # a pack takes two workers' slots: 4 free slots, two packs; 2 or 1 free slots, one pack
    assert [pack_sizes(n, 16, 4) for n in (1, 2, 3, 16, 40)] == [1, 1, 2, 8, 16]
    assert pack_sizes(16, 16, 2) == 16 and pack_sizes(16, 16, 1) == 16 and pack_sizes(5, 1, 1) == 1
    keys_ = ["a", "b", "a", "a", None, "b"]
    assert pack_plan(keys_, 2) == [[0, 2], [3], [1, 5], [4]]
    assert pack_plan(keys_, 1) == [[i] for i in range(6)]
    assert pack_plan(keys_, 8, indices=[2, 3, 5]) == [[2, 3], [5]]
    assert pack_plan(keys_, 8, workers=4) == [[0, 2], [3], [1], [5], [4]]
    assert pack_plan(keys_, 8, workers=2) == [[0, 2, 3], [1, 5], [4]]
    # a task whose step dwarfs its logging packs in one slot: one pack per free worker
    assert pack_sizes(8, 8, 2, slots=1) == 4 and pack_sizes(8, 8, 1, slots=1) == 8
    assert pack_plan(keys_, 8, workers=2, slots={"a": 1}) == [[0, 2], [3], [1, 5], [4]]
    assert slots_for_step(ONE_SLOT_RATIO * LOGGER_STEP_SECONDS) == 1 and slots_for_step(2e-3) == 1
    assert slots_for_step(0.5 * ONE_SLOT_RATIO * LOGGER_STEP_SECONDS) == PACK_SLOTS == 2


@pytest.mark.slow
def test_a_heavy_task_sweep_runs_one_pack_per_free_worker_and_says_so(in_tmp, words_file, capsys):
    # examples/wavenet.py: a member's step (~3 ms on one core) is ~40x its logging's work: a pack's logger
    # needs no core of its own, so 4 points on 2 workers train as two packs of two, one per core
    path = trainer_sweep(in_tmp, words_file, f"""\
        steps: {{value: 20}}
        seed: {{values: [1, 2, 3, 4]}}
        task: {{value: '{REPO / "examples" / "wavenet.py"}:make'}}
        task_args: {{value: "{{'data': '{words_file}'}}"}}
        """, name="heavy")
    sweep = load_sweep(path)
    packing = pack_keys(sweep)
    key = packing.keys[0]
    assert packing.slots == {key: 1} and packing.step_seconds[key] >= ONE_SLOT_RATIO * LOGGER_STEP_SECONDS
    assert run_sweep(sweep, "heavy", workers=2, pack=4, poll_seconds=0.05, progress=False) == 0
    rows = read_manifest(in_tmp / "heavy" / sweep.key)
    ids = [run_id_for(sweep.key, i) for i in range(4)]
    assert (rows["state"] == "finished").all() and rows["pack"].tolist() == [ids[:2]] * 2 + [ids[2:]] * 2
    err = capsys.readouterr().err
    assert err.count("wavenet.py:make take 1 worker slot(s) each, as many packs as 2 worker(s) take") == 1


def test_the_default_pack_follows_the_points_device(in_tmp, words_file):
    cpu = load_sweep(trainer_sweep(in_tmp, words_file, "seed: {values: [1, 2]}\n", name="cpu"))
    gpu = load_sweep(trainer_sweep(in_tmp, words_file, "seed: {values: [1, 2]}\ndevice: {value: cuda}\n", name="gpu"))
    auto = load_sweep(trainer_sweep(in_tmp, words_file, "seed: {values: [1, 2]}\ndevice: {value: auto}\n",
                                    name="auto"))
    assert default_pack(cpu, gpu_visible=True) == CPU_PACK and default_pack(gpu, gpu_visible=False) == GPU_PACK
    assert default_pack(auto, gpu_visible=True) == GPU_PACK and default_pack(auto, gpu_visible=False) == CPU_PACK
    assert default_pack(load_sweep(write_sweep(in_tmp, "x: {values: [1]}\n")), gpu_visible=True) == 1


def test_bad_pack_flag_is_one_line_exit_2(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1]}\n")
    with pytest.raises(SystemExit) as exc:
        main([str(path), "--pack", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "lrscan sweep: error: --pack 0: need at least 1 (1: one process per point)\n"
    assert not (in_tmp / "runs").exists()


def test_dry_run_shows_the_packs(in_tmp, words_file, capsys):
    path = trainer_sweep(in_tmp, words_file, "seed: {values: [1, 2, 3, 4, 5]}\nsteps: {values: [10, 20]}\n")
    main([str(path), "--dry-run", "--pack", "4", "--workers", "1"])
    out = capsys.readouterr().out
    assert ("# packs of up to 4 (1 workers), each one `python -m lrscan.pipeline.pack` process: [0,2,4,6] [1,3,5,7]; "
            "one process each: 8, 9") in out


@pytest.mark.slow
def test_a_packed_slurm_array_task_runs_its_pack(in_tmp, words_file, capsys):
    path = trainer_sweep(in_tmp, words_file, "steps: {value: 50}\nseed: {values: [1, 2, 3, 4]}\n", name="arr")
    main([str(path), "--print-sbatch", "--pack", "2"])
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script and "PACKS=('0 1' '2 3')" in script and "--pack 2" in script
    (in_tmp / "array.sh").write_text(script)
    # what Slurm does for array task 1: the script with its task id set
    done = subprocess.run(["bash", str(in_tmp / "array.sh")], cwd="/", capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"})
    assert done.returncode == 0, done.stderr
    sweep = load_sweep(path)
    rows = read_manifest(in_tmp / "runs" / sweep.key)
    assert rows["state"].tolist() == ["pending", "pending", "finished", "finished"]
    assert list(rows["pack"][2]) == [run_id_for(sweep.key, 2), run_id_for(sweep.key, 3)]


@pytest.mark.slow
def test_a_stopped_runner_stops_its_pack_and_records_every_member_killed(in_tmp, words_file):
    path = trainer_sweep(in_tmp, words_file, """\
        schedule: {value: constant}
        steps: {value: 400000}
        ckpt_every_steps: {value: 1000}
        log_chunk_steps: {value: 100}
        seed: {values: [1, 2]}
        """, name="stopped")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    # a long bound on the runner's wait for its stopped pack: its SIGKILL after the bound must not beat this test's
    # look at the pending SIGTERM on a busy machine
    runner = cli(str(path), "--workers", "1", "--pack", "2", "--no-progress", "--term-timeout", "300", cwd=in_tmp)
    ckpts = [folder / "checkpoints" / f"{run_id_for(sweep.key, i)}.pt" for i in range(2)]
    wait_for(lambda: all(p.exists() for p in ckpts), 300)
    pack = _pack_pid(folder)
    # frozen, so that the runner's SIGTERM lands mid-run (400k steps: far from its end however slow this test is
    # to get here on a busy machine; the members are killed, never trained to the end)
    os.kill(pack, signal.SIGSTOP)
    assert Path(f"/proc/{pack}/status").is_file(), "the pack ended before it could be stopped mid-run"
    # SIGSTOP lands asynchronously: sent before the pack had stopped, the runner's SIGTERM was seen taken by the
    # pack's handler as the stop landed (nothing left pending, and the wait below ran out its 60 s)
    wait_for(lambda: _process_state(pack) == "T", 60)
    runner.send_signal(signal.SIGTERM)
    # the runner's SIGTERM waits, pending, on the frozen pack; either way the pack acts on it when it goes on,
    # which the rows below check
    deadline = time.monotonic() + 60
    while not _signal_pending(pack, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "claims").is_dir()
    os.kill(pack, signal.SIGCONT)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 128 + signal.SIGTERM, err
    rows = read_manifest(folder)
    assert rows["state"].tolist() == ["killed", "killed"] and rows["exit_code"].tolist() == [130, 130]


@pytest.mark.slow
def test_a_task_sweep_runs_in_one_pack_or_one_process_per_point_said_once(in_tmp, words_file, capsys):
    (in_tmp / "net.py").write_text(NET)
    for name, task_args in (("sgd", "{'momentum': 0.9}"), ("rmsprop", "{'opt': 'rmsprop'}")):
        path = trainer_sweep(in_tmp, words_file, f"""\
            steps: {{value: 30}}
            seed: {{values: [1, 2, 3]}}
            task: {{value: 'net.py:make'}}
            task_args: {{value: "{task_args}"}}
            """, name=name)
        sweep = load_sweep(path)
        # one worker: one pack, however long the tiny net's step is timed on a busy machine (slots_for_step)
        assert run_sweep(sweep, name, workers=1, pack=4, poll_seconds=0.05, progress=False) == 0
        rows = read_manifest(in_tmp / name / sweep.key)
        ids = [run_id_for(sweep.key, i) for i in range(3)]
        assert rows["run_id"].tolist() == ids and (rows["state"] == "finished").all()
        runs = load_runs(in_tmp / name / sweep.key / "wandb").runs
        assert sorted(runs["run_id"]) == ids and (runs["state"] == "finished").all()
        err = capsys.readouterr().err
        if name == "sgd":
            assert rows["pack"].tolist() == [ids] * 3 and "one process per point" not in err
        else:
            assert rows["pack"].isna().all()
            assert err.count(f"every point of {sweep.key} run(s) one process per point: it trains its own task "
                             f"(net.py:make), which a pack cannot step: its optimizer is RMSprop") == 1


def test_a_tasks_check_is_asked_once_per_process_until_its_file_changes(tmp_path, monkeypatch):
    tasks = tmp_path / "tasks.py"
    tasks.write_text("def make(seed): ...\n")
    asked = []

    def ask(args, timeout_s=300.0):
        asked.append(list(args))
        return ("", 0.5) if len(asked) < 3 else ("its task could not be checked (exit code 1)", 0.0)

    monkeypatch.setattr(packs, "why_not_packed_task", ask)
    args = (f"--task={tasks}:make", f"--ckpt_dir={tmp_path}")
    assert packs.checked_task(args, f"{tasks}:make") == ("", 0.5)
    assert packs.checked_task(args, f"{tasks}:make") == ("", 0.5) and len(asked) == 1  # kept
    tasks.write_text("def make(seed):\n    return None\n")  # another size: asked again
    assert packs.checked_task(args, f"{tasks}:make") == ("", 0.5) and len(asked) == 2
    tasks.write_text("def make(seed):\n    return None  # x\n")
    for n in (3, 4):  # an answer that is not a check is never kept
        assert packs.checked_task(args, f"{tasks}:make")[0].startswith("its task could not be checked")
        assert len(asked) == n
