"""Real training runs: offline wandb, the real logger process, real .wandb files read back."""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import wandb
import yaml

from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig, parse_args
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.train import checkpoint
from lrscan.pipeline.train.data import load_splits
from lrscan.pipeline.train.loop import batch_indices, compatible, train
from lrscan.pipeline.train.model import MLP
from lrscan.pipeline.train.numpy_step import NumpySGDStep, alphas, numpy_steps
from lrscan.pipeline.train.schedule import schedule_lrs
from tests.conftest import REPO, train_argv
from tests.support.threads import call_in_thread

pytestmark = pytest.mark.slow


# a run a test signals once its first checkpoint is on disk: at this model's ~20k steps/s, ~0.5 s of training must
# be left after it, or the signal can land once training has ended (the run then ends 0, rightly)
SIGNAL_STEPS = 12000


def run_files(wandb_dir: Path, run_id: str | None = None) -> list[Path]:
    pattern = f"offline-run-*-{run_id}/run-{run_id}.wandb" if run_id else "offline-run-*/run-*.wandb"
    return sorted((wandb_dir / "wandb").glob(pattern))


def history(path: Path) -> dict[str, np.ndarray]:
    return read_run_file(path).history


def test_offline_run_logs_every_step_with_its_four_keys(words_file, tmp_path):
    cfg = parse_args(train_argv(words_file, "--steps=300", "--lre_min=-3", "--lre_max=-1", "--run_id=every1",
                                "--wandb_group=g1", "--wandb_tags=[\"t1\"]"))
    summary = train(cfg)
    [path] = run_files(tmp_path, "every1")
    rf = read_run_file(path)
    h = rf.history
    assert h["step"].tolist() == list(range(300))
    lrs, lres = schedule_lrs("range", 300, lre_min=-3, lre_max=-1, lr=0.1, decay_steps=(), decay_lrs=())
    np.testing.assert_allclose(h[keys.LR], lrs, rtol=1e-12)
    np.testing.assert_allclose(h[keys.LRE], lres, rtol=1e-12)
    assert h[keys.LRE][0] == -3.0 and h[keys.LRE][-1] == -1.0
    np.testing.assert_allclose(h[keys.LOG10_LOSS], np.log10(h[keys.LOSS]), rtol=1e-6)
    assert np.all(np.isfinite(h[keys.SMOOTH_LOSS]))
    # config, summary, identity: everything the analysis needs is in the one file
    assert rf.config["lre_min"] == -3 and rf.config["steps"] == 300 and rf.config["run_id"] == "every1"
    assert rf.group == "g1" and "t1" in rf.tags and rf.job_type == "train" and rf.exit_code == 0
    for k in ("train_loss", "dev_loss", "test_loss"):
        assert rf.summary[k] == pytest.approx(summary[k])
    assert rf.summary[keys.FINAL_STEP] == 299


def test_same_seed_same_losses_other_seed_other_losses(words_file, tmp_path):
    for run_id, seed in (("det1", 5), ("det2", 5), ("det3", 6)):
        train(parse_args(train_argv(words_file, "--steps=150", "--schedule=constant", f"--seed={seed}",
                                    f"--run_id={run_id}")))
    a, b, c = (history(run_files(tmp_path, r)[0])[keys.LOSS] for r in ("det1", "det2", "det3"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batches_do_not_depend_on_where_the_run_started():
    whole = batch_indices(7, 0, 3000, 1000, 32)
    parts = [batch_indices(7, s, n, 1000, 32) for s, n in ((0, 1000), (1000, 1500), (2500, 500))]
    np.testing.assert_array_equal(whole.numpy(), np.concatenate([p.numpy() for p in parts]))


def test_climb_stop_ends_the_range_test_and_says_so(words_file, tmp_path):
    argv = train_argv(words_file, "--steps=400", "--lre_min=-2", "--lre_max=3", "--climb_burn_in_steps=50",
                      "--stop_on_nonfinite=False")
    summary = train(parse_args(argv + ["--run_id=climb1"]))
    assert summary[keys.STOP_REASON] == keys.STOP_CLIMB
    stop = summary[keys.STOP_STEP]
    h = history(run_files(tmp_path, "climb1")[0])
    assert h["step"].tolist() == list(range(stop + 1))  # logged up to and including the stop step
    assert summary[keys.BEST_SMOOTH_LOSS] * 4 < h[keys.SMOOTH_LOSS][-1]
    # switched off, the same test runs to lre_max as the seed does
    summary = train(parse_args(argv + ["--run_id=climb2", "--stop_on_climb=False"]))
    assert keys.STOP_REASON not in summary and summary[keys.FINAL_STEP] == 399
    h = history(run_files(tmp_path, "climb2")[0])
    assert h["step"].tolist() == list(range(400)) and h[keys.LRE][-1] == 3.0


def test_divergence_stops_the_run_and_exits_zero(words_file, tmp_path):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    argv = train_argv(words_file, "--steps=300", "--lre_min=1", "--lre_max=40", "--stop_on_climb=False",
                      "--run_id=div1")
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", *argv], env=env, cwd=tmp_path,
                       capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rf = read_run_file(run_files(tmp_path, "div1")[0])
    at = rf.summary[keys.DIVERGED_AT_STEP]
    assert rf.summary[keys.STOP_REASON] == keys.STOP_NON_FINITE and rf.summary[keys.STOP_STEP] == at
    h = rf.history
    assert h["step"][-1] == at and not math.isfinite(h[keys.LOSS][-1]) and np.all(np.isfinite(h[keys.LOSS][:-1]))


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


def _freeze_at_first_checkpoint(proc: subprocess.Popen, ckpt: Path) -> int:
    """Wait until the run's first checkpoint is on disk, then stop the trainer (SIGSTOP) mid-run:
    a signal sent next lands in a run that has a checkpoint and has not finished. The checkpoint's step."""
    _wait_for(ckpt.exists, 120, "the first checkpoint")
    os.kill(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None, "the run ended before it could be stopped mid-run"
    state = checkpoint.load(ckpt)
    assert not state["finished"]
    return state["step"]


def test_kill_9_then_resume_gives_the_uninterrupted_loss_sequence(words_file, tmp_path):
    # started from a process with a wandb service of its own (a notebook's `!python -m pipeline.train` after its
    # wandb.init): the killed run and its resumption open in services of their own, never in that one
    wandb.setup()
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    assert env.get("WANDB_SERVICE"), "wandb.setup() left no service token to pass on"
    argv = train_argv(words_file, "--schedule=step", "--steps=6000", "--lr=0.1", "--decay_steps=[3000]",
                      "--decay_lrs=[0.01]",
                      "--ckpt_every_steps=1000", "--log_chunk_steps=100")
    cmd = [sys.executable, "-m", "lrscan.pipeline.train", *argv]
    # the uninterrupted reference
    subprocess.run(cmd + ["--run_id=whole"], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    reference = history(run_files(tmp_path, "whole")[0])

    # the same run, its whole process group killed for real (as a sweep runner or Slurm does) while
    # it trains past its first checkpoint (frozen there first, so the kill cannot land after its end)
    ckpt = tmp_path / "checkpoints" / "cut.pt"
    proc = subprocess.Popen(cmd + ["--run_id=cut"], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _freeze_at_first_checkpoint(proc, ckpt)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(cmd + ["--run_id=cut", "--resume"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run cut at step" in resumed.stdout

    segments = [history(p) for p in run_files(tmp_path, "cut")]
    assert len(segments) == 2
    steps = np.concatenate([s["step"] for s in segments])
    assert sorted(steps.tolist()) == list(range(6000)), "a lost or repeated step"
    order = np.argsort(steps)
    for k in (keys.LOSS, keys.LR, keys.LRE, keys.LOG10_LOSS):
        np.testing.assert_array_equal(np.concatenate([s[k] for s in segments])[order], reference[k])
    # the resumed run's summary speaks for the whole run
    whole, cut = (read_run_file(run_files(tmp_path, r)[-1]).summary for r in ("whole", "cut"))
    assert cut[keys.FINAL_STEP] == 5999 and keys.DIVERGED_AT_STEP not in cut
    assert cut[keys.DEV_LOSS] == pytest.approx(whole[keys.DEV_LOSS], rel=1e-6)
    assert cut[keys.STEPS_PER_SECOND] > 0.2 * whole[keys.STEPS_PER_SECOND]


def test_resume_keeps_the_divergence_and_refuses_other_data(words_file, tmp_path):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    argv = train_argv(words_file, "--schedule=constant", "--lr=1e37", "--stop_on_nonfinite=False",
                      f"--steps={SIGNAL_STEPS}", "--ckpt_every_steps=2000", "--run_id=div2")
    cmd = [sys.executable, "-m", "lrscan.pipeline.train", *argv]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _stop_with_sigterm(proc, tmp_path / "checkpoints" / "div2.pt")

    # another word list under the same run id: refused, one line
    other = tmp_path / "other.txt"
    other.write_text("\n".join(["xyz", "zyx"] * 20))
    other_cmd = [f"--data={other}" if a.startswith("--data=") else a for a in cmd]
    p = subprocess.run(other_cmd + ["--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "is not the word list it was trained on" in p.stderr

    p = subprocess.run(cmd + ["--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    last = read_run_file(run_files(tmp_path, "div2")[-1])
    first_bad = min(int(s) for path in run_files(tmp_path, "div2") for s, loss in
                    zip(history(path)["step"], history(path)[keys.LOSS]) if not math.isfinite(loss))
    assert last.summary[keys.DIVERGED_AT_STEP] == first_bad


def _stop_with_sigterm(proc: subprocess.Popen, ckpt: Path) -> None:
    # SIGTERM mid-run: the trainer stops at the end of a chunk, with a checkpoint, exit code 130
    _freeze_at_first_checkpoint(proc, ckpt)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=120) == 130


def record_kinds(path: Path) -> list[str]:
    """The kinds of a .wandb file's records other than history rows, in order (wandb_internal.proto's oneof)."""
    from lrscan.pipeline.runlog.framing import HEADER, Scan, record_class, scan

    kinds = []
    for payload in scan(path.read_bytes(), len(HEADER), Scan([], [], 0, False), True).others:
        record = record_class()()
        record.ParseFromString(payload)
        kinds.append(record.WhichOneof("record_type"))
    return kinds


def test_a_preemption_notice_checkpoints_marks_the_run_preempting_and_a_resume_completes_it(words_file, tmp_path):
    # SIGUSR1 (Slurm's --signal, forwarded by `wandb agent`), then the TERM that follows it: the run stops at a
    # chunk's end with a checkpoint, is marked preempting for W&B's sweep requeue and exits 128 + SIGUSR1
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_RUN_ID": "pre1"}
    cmd = [sys.executable, "-m", "lrscan.pipeline.train",
           *train_argv(words_file, "--schedule=constant", f"--steps={SIGNAL_STEPS}", "--ckpt_every_steps=2000")]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _freeze_at_first_checkpoint(proc, tmp_path / "checkpoints" / "pre1.pt")
    proc.send_signal(signal.SIGUSR1)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, err
    assert "preempted" in err and "marked preempting" in err
    [first] = run_files(tmp_path, "pre1")
    assert read_run_file(first).exit_code == 138 and "preempting" in record_kinds(first)
    stopped_at = checkpoint.load(tmp_path / "checkpoints" / "pre1.pt")
    assert not stopped_at["finished"] and 0 < stopped_at["step"] < SIGNAL_STEPS

    # what W&B's requeue hands the next agent: the same run id, and the job's WANDB_RESUME=allow
    p = subprocess.run(cmd, env={**env, "WANDB_RESUME": "allow"}, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"resuming run pre1 at step {stopped_at['step']}" in p.stdout
    first, second = run_files(tmp_path, "pre1")
    assert "preempting" not in record_kinds(second) and read_run_file(second).exit_code == 0
    steps = np.concatenate([history(f)["step"] for f in (first, second)])
    assert sorted(steps.tolist()) == list(range(SIGNAL_STEPS)), "a lost or repeated step"


def test_an_lr_past_float32_diverges_instead_of_crashing(words_file):
    summary = train(parse_args(train_argv(words_file, "--lre_min=39", "--lre_max=41", "--steps=50",
                                          "--stop_on_nonfinite=False",
                                          "--stop_on_climb=False", "--wandb_mode=disabled")))
    assert summary[keys.FINAL_STEP] == 49 and summary[keys.DIVERGED_AT_STEP] <= 1


def test_a_damaged_earlier_segment_does_not_block_resume(words_file, tmp_path):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    argv = train_argv(words_file, "--schedule=constant", "--steps=300", "--run_id=dmg1")
    junk = tmp_path / "wandb" / "offline-run-20000101_000000-dmg1" / "run-dmg1.wandb"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"")
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", *argv, "--resume"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    h = history([f for f in run_files(tmp_path, "dmg1") if f != junk][0])
    assert h["step"].tolist() == list(range(300))


def test_sweep_locked_config_wins_over_flags(words_file, tmp_path):
    # what `wandb agent` does: a param file + env, and the same values as --key=value flags
    params = tmp_path / "sweep-abc" / "config-lock1.yaml"
    params.parent.mkdir()
    params.write_text(yaml.safe_dump({"wandb_version": 1, "steps": {"value": 40}, "lre_min": {"value": -2.5}}))
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_SWEEP_ID": "abc", "WANDB_RUN_ID": "lock1",
           "WANDB_SWEEP_PARAM_PATH": str(params)}
    argv = train_argv(words_file, "--steps=60", "--lre_min=-3")
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", *argv], env=env, cwd=tmp_path,
                       capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rf = read_run_file(run_files(tmp_path, "lock1")[0])
    assert rf.config["steps"] == 40 and rf.config["lre_min"] == -2.5
    assert rf.history["step"][-1] == 39 and rf.history[keys.LRE][0] == -2.5


@pytest.mark.parametrize("argv, fragment", [
    (["--steps=abc"], "--steps='abc': expected int"),
    (["--ckpt_dir=/proc/lrscan-no"], "ckpt_dir='/proc/lrscan-no': cannot create it"),
    (["--n_embd=100000000", "--n_hidden=100000000"], "more than this machine's memory"),
    (["--nope=1"], "unknown config key 'nope'"),
    (["--data=/does/not/exist.txt"], "does not exist"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, words_file, argv, fragment):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    if not any(a.startswith("--data=") for a in argv):
        argv = [f"--data={words_file}", *argv]
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", *argv], env=env, cwd=tmp_path,
                       capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and fragment in p.stderr
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "checkpoints").exists()


def test_disabled_mode_needs_no_wandb_process(words_file):
    summary = train(parse_args(train_argv(words_file, "--steps=50", "--wandb_mode=disabled", "--schedule=constant")))
    assert summary[keys.FINAL_STEP] == 49 and math.isfinite(summary["dev_loss"])


def test_help_exits_zero():
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", "--help"], capture_output=True, text=True,
                       cwd=REPO,
                       timeout=60)
    assert p.returncode == 0 and "--lre_min=" in p.stdout


def test_coupled_range_pair_through_the_agent_hand_off(words_file, tmp_path):
    # a hand-picked pair arrives as one dict: locked in wandb.config and rendered as a repr flag
    params = tmp_path / "sweep-pairs" / "config-pair1.yaml"
    params.parent.mkdir()
    params.write_text(yaml.safe_dump({"wandb_version": 1, "lre_range": {"value": {"lre_min": -1.5, "lre_max": -0.5}}}))
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_SWEEP_ID": "pairs", "WANDB_RUN_ID": "pair1",
           "WANDB_SWEEP_PARAM_PATH": str(params)}
    argv = train_argv(words_file, "--steps=50", "--lre_range={'lre_min': -1.5, 'lre_max': -0.5}")
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", *argv], env=env, cwd=tmp_path,
                       capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rf = read_run_file(run_files(tmp_path, "pair1")[0])
    assert rf.config["lre_min"] == -1.5 and rf.config["lre_max"] == -0.5
    assert rf.history[keys.LRE][0] == -1.5 and rf.history[keys.LRE][-1] == -0.5


def test_a_diverged_run_says_it_has_no_samples_and_exits_zero(words_file, tmp_path):
    # the command of the report, samples on (the default): no traceback, one line instead of names
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    argv = [f"--data={words_file}", "--steps=10", "--lre_max=400", "--run_id=div3"]
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", *argv], env=env, cwd=tmp_path,
                       capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # neither a traceback nor numpy's overflow warning for the inf lr
    assert [line for line in p.stdout.splitlines() if line.startswith("samples:")] == [
        "samples: none, the model diverged (its weights are not finite)"]
    assert "run div3: train nan" in p.stdout  # the summary line comes first
    rf = read_run_file(run_files(tmp_path, "div3")[0])
    assert rf.exit_code == 0 and rf.summary[keys.STOP_REASON] == keys.STOP_NON_FINITE


def _train_step_by_step(cfg: TrainConfig, n_steps: int) -> MLP:
    """The seed's loop, one step at a time and no chunks: the weights after steps 0..n_steps-1."""
    splits = load_splits(cfg.data, cfg.block_size, cfg.split_seed)
    vocab_size = len(splits.vocab)
    model = MLP.create(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden, seed=cfg.seed, init=cfg.init)
    step_fn = NumpySGDStep(model, cfg.batch_size)  # the CPU's step, as the loop's
    Xtr, Ytr = splits.train
    lrs, _ = schedule_lrs(cfg.schedule, cfg.steps, lre_min=cfg.lre_min, lre_max=cfg.lre_max, lr=cfg.lr,
                          decay_steps=cfg.decay_steps, decay_lrs=cfg.decay_lrs)
    ix = batch_indices(cfg.seed, 0, n_steps, Xtr.shape[0], cfg.batch_size)
    factors = alphas(lrs[:n_steps, None], cfg.batch_size)
    for s in range(n_steps):
        Xb, Yb = Xtr[ix[s]], Ytr[ix[s]]
        numpy_steps(step_fn, [(Xb.reshape(1, -1).numpy(), Yb.reshape(1, -1).numpy(), factors[s])],
                    np.empty((1, 1, cfg.batch_size), np.float32))
    return model


@pytest.mark.parametrize("stop_flags", [
    ["--lre_min=-2", "--lre_max=3", "--climb_burn_in_steps=50", "--stop_on_nonfinite=False"],  # a climb stop
    ["--lre_min=-2", "--lre_max=40", "--stop_on_climb=False"],                                # a non-finite loss
])
def test_an_early_stop_inside_a_chunk_keeps_the_model_of_the_stop_step(words_file, tmp_path, stop_flags):
    cfg = parse_args(train_argv(words_file, "--steps=600", "--log_chunk_steps=256", "--run_id=stop1", *stop_flags))
    summary = train(cfg)
    stop = summary[keys.STOP_STEP]
    assert (stop + 1) % 256 != 0 and stop + 1 < 600, "the stop must fall inside a chunk for this test to mean anything"
    assert summary[keys.FINAL_STEP] == stop
    # the weights are those after the stop step: the step-by-step loop, stopped there, bit for bit
    expected = _train_step_by_step(cfg, stop + 1)
    state = checkpoint.load(checkpoint.ckpt_path(cfg.ckpt_dir, "stop1"))
    assert state["finished"] and state["step"] == stop + 1
    assert torch.equal(state["flat"].isnan(), expected.flat.isnan())
    assert torch.equal(state["flat"].nan_to_num(), expected.flat.nan_to_num())
    splits = load_splits(cfg.data, cfg.block_size, cfg.split_seed)
    for key, split in ((keys.TRAIN_LOSS, splits.train), (keys.DEV_LOSS, splits.dev), (keys.TEST_LOSS, splits.test)):
        want = expected.loss(*split)
        assert summary[key] == want or (math.isnan(summary[key]) and math.isnan(want)), key


def _wandb_records(path: Path):
    """Every record of a .wandb file, parsed: a 7-byte header, then leveldb-log chunks in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, parts = path.read_bytes(), 7, b""
    block = 32 * 1024
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack_from("<IHB", data, pos) if left >= 7 else (0, 0, 0)
        if kind == 0:  # a block's zero-padded tail
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or the LAST chunk of a record
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


@pytest.mark.parametrize(("module", "program"), [
    ("lrscan.pipeline.train", ""),
    ("pipeline.train", ""),  # a checkout's older name (users' sweep YAMLs say it): recorded as the installed one
    ("lrscan.pipeline.train", "pipeline/train/__main__.py"),  # `wandb agent` passes the YAML's program
])
def test_wandb_records_the_trainers_program_and_arguments(words_file, tmp_path, module, program):
    # what the W&B UI shows as the run's command: the trainer's, though wandb runs in the logger process
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}  # a checkout's folders on the path
    env |= {"WANDB_PROGRAM": program} if program else {}
    argv = train_argv(words_file, "--steps=2000", "--run_id=cmd1", "--lre_min=-2.5")  # see the test below
    p = subprocess.run([sys.executable, "-m", module, *argv], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    [path] = run_files(tmp_path, "cmd1")
    [environment] = [r.environment for r in _wandb_records(path) if r.WhichOneof("record_type") == "environment"
                     and r.environment.program]
    assert environment.program == "-m lrscan.pipeline.train"
    assert list(environment.args) == argv
    assert environment.executable == sys.executable


def test_an_in_process_call_records_its_own_program_and_arguments(words_file, tmp_path):
    # a user's own script calls train() in its process: W&B records that script and its arguments (as
    # wandb.init in the script would), not the logger process's. A script of its own, not this test's
    # process, whose main is pytest's or, on an xdist worker, a `python -c` with no main file
    script = tmp_path / "my_training.py"
    # wandb-core writes the environment record from its own probe of the process, not from wandb.init: a 20-step
    # run's file once lacked it in a full suite on 2 cores (not reproduced alone, nor under 4 busy loops), so the run
    # lasts a little longer than that probe may take
    argv = train_argv(words_file, "--steps=2000", "--run_id=cmd2")
    script.write_text(f"from lrscan.pipeline.config import parse_args\nfrom lrscan.pipeline.train.loop import train\n\n"
                      f"train(parse_args({argv!r}))\n")
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, str(script), "--my-flag", "1"], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    [environment] = [r.environment for r in _wandb_records(run_files(tmp_path, "cmd2")[0])
                     if r.WhichOneof("record_type") == "environment" and r.environment.program]
    assert environment.program == str(script) and list(environment.args) == ["--my-flag", "1"]


def test_resume_may_rename_and_retag_a_run_but_not_change_its_numbers():
    saved = TrainConfig(wandb_name="first", wandb_tags=("a",), eval_every_steps=0).to_dict()
    assert compatible(saved, TrainConfig(wandb_name="renamed", wandb_tags=("a", "b"), wandb_group="g2",
                                         eval_every_steps=100)) == []
    assert compatible(saved, TrainConfig(lr=0.2, wandb_project="elsewhere")) == ["lr", "wandb_project"]


def test_resume_without_a_run_id_continues_only_the_one_unfinished_run_that_fits(words_file, tmp_path, monkeypatch):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    ckpt_dir = tmp_path / "checkpoints"

    def command(*extra: str, steps: int = 6000, lr: float = 0.1) -> list[str]:
        argv = train_argv(words_file, "--schedule=constant", f"--steps={steps}", f"--lr={lr}", "--ckpt_every_steps=500",
                          *extra)
        return [sys.executable, "-m", "lrscan.pipeline.train", *argv]

    def run(cmd: list[str], **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env={**env, **extra_env}, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    # two unfinished runs of one config, stopped mid-run, and a finished run of another, written last
    for run_id in ("cutA", "cutB"):
        proc = subprocess.Popen(command(f"--run_id={run_id}"), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _stop_with_sigterm(proc, ckpt_dir / f"{run_id}.pt")
    assert run(command("--run_id=other", steps=50, lr=0.05)).returncode == 0

    # two fit: which one is not for lrscan to guess
    p = run(command("--resume"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "--resume without a run id: 2 unfinished runs fit this config; choose one with --run_id=ID" in p.stderr
    assert "cutA (at step " in p.stderr and "cutB (at step " in p.stderr and "other (lr, steps differ)" in p.stderr
    # none fits: not the newest checkpoint, which is another run's; one line saying so
    p = run(command("--resume", steps=50, lr=0.05))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "no unfinished run fits this config" in p.stderr and "other (finished)" in p.stderr

    # one left that fits: an exported WANDB_RESUME continues it, under a new display name
    assert run(command("--run_id=cutB", "--resume")).returncode == 0
    p = run(command("--wandb_name=renamed"), WANDB_RESUME="allow")
    assert p.returncode == 0, p.stderr
    assert "resuming run cutA at step" in p.stdout
    assert checkpoint.load(ckpt_dir / "cutA.pt")["finished"]
    # train() itself never reads the environment: the command line hands WANDB_RUN_ID and WANDB_RESUME in
    monkeypatch.setenv("WANDB_RESUME", "allow")
    monkeypatch.setenv("WANDB_RUN_ID", "fromenv")
    train(parse_args(train_argv(words_file, "--schedule=constant", "--steps=20", "--wandb_mode=disabled")))
    assert not (ckpt_dir / "fromenv.pt").exists()


def test_train_runs_in_a_thread_other_than_the_main_one(words_file, tmp_path, monkeypatch):
    # a notebook kernel's worker, Ray, Gradio: Python installs signal handlers in the main thread only, so the
    # loop leaves the process's handlers alone there, and the run is logged as from the main thread
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    summary = call_in_thread(lambda: train(parse_args(train_argv(
        words_file, "--steps=60", "--log_chunk_steps=16", "--run_id=thr1", f"--ckpt_dir={tmp_path / 'ck'}"))))
    assert summary[keys.FINAL_STEP] == 59
    assert history(run_files(tmp_path, "thr1")[-1])["step"].tolist() == list(range(60))
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_a_run_paused_at_a_step_continues_to_the_uninterrupted_run(words_file, tmp_path, capsys):
    # pause_at_step: the run ends there with an unfinished checkpoint; the same run with a later pause (or none)
    # continues it, every step once, to the numbers of the run that never paused; names are sampled at its end only
    cfg = TrainConfig(data=str(words_file), schedule="step", steps=40, lr=0.1, decay_steps=(30,), decay_lrs=(0.01,),
                      eval_every_steps=0, samples=2, ckpt_dir=str(tmp_path / "ckpt"), wandb_mode="disabled")
    whole: list[np.ndarray] = []
    reference = train(cfg.replace(run_id="whole"), on_steps=lambda s, c: whole.append(c[keys.LOSS]))
    parts: list[np.ndarray] = []
    first = train(cfg.replace(run_id="cut", pause_at_step=15), on_steps=lambda s, c: parts.append(c[keys.LOSS]))
    assert first[keys.PAUSED_AT_STEP] == 15 and first[keys.FINAL_STEP] == 14 and keys.DEV_LOSS in first
    printed = capsys.readouterr().out
    assert "run cut: dev " in printed and "samples:" not in printed.split("run cut:")[-1]
    state = checkpoint.load(checkpoint.ckpt_path(cfg.ckpt_dir, "cut"))
    assert not state["finished"] and state["step"] == 15
    again = train(cfg.replace(run_id="cut", pause_at_step=15, resume=True))  # at its pause already: ends there
    assert again[keys.PAUSED_AT_STEP] == 15
    last = train(cfg.replace(run_id="cut", resume=True), on_steps=lambda s, c: parts.append(c[keys.LOSS]))
    np.testing.assert_array_equal(np.concatenate(parts), np.concatenate(whole))
    assert last[keys.PAUSED_AT_STEP] is None and last[keys.FINAL_STEP] == 39
    assert capsys.readouterr().out.count("samples:") == 1  # the run's end
    assert last[keys.DEV_LOSS] == pytest.approx(reference[keys.DEV_LOSS], rel=1e-6)
    assert checkpoint.load(checkpoint.ckpt_path(cfg.ckpt_dir, "cut"))["finished"]
