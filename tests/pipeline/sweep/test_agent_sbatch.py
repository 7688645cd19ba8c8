"""The `wandb agent` batch script: its lines, and a preempted job run for real (bash, and a real Slurm where up).

A job runs as written: `conda activate` (a stand-in conda whose hook activates a folder holding python3 and
wandb), then the real `wandb agent` command line with its server calls answered from a folder
(tests/pipeline/sweep/agent_server.py), which starts the real trainer. A preemption notice (SIGUSR1 to the
batch shell, as Slurm's `--signal=B:USR1@S` sends it) must end the run with a checkpoint, marked preempting,
stop the agent and requeue the job; the job's next start must be handed the run back and resume it into the
same run id, every step logged once.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.sweep.__main__ import main
from lrscan.pipeline.sweep.spec import load_sweep
from lrscan.pipeline.train import checkpoint
from tests.conftest import REPO
from tests.pipeline.sweep.agent_server import read_log, run_end, wandb_command, write_server
from tests.pipeline.sweep.fakes import need_slurm, wandb_run_args

STEPS = 12000  # ~0.5 s of training after the first checkpoint at this model's ~20k steps/s: the notice lands mid-run
SWEEP = f"""\
name: agent-test
program: pipeline/train/__main__.py
command: ["${{env}}", "python3", "-m", "lrscan.pipeline.train", "${{args}}"]
method: grid
parameters:
  schedule: {{value: constant}}
  steps: {{value: {STEPS}}}
  ckpt_every_steps: {{value: 2000}}
  n_embd: {{value: 2}}
  n_hidden: {{value: 16}}
  samples: {{value: 0}}
  seed: {{values: [1, 2]}}
"""
# `conda shell.bash hook` prints shell functions; this stand-in's `conda activate ENV` puts $FAKE_CONDA_ENVS/ENV/bin
# first on PATH, which is all the job needs of conda
FAKE_CONDA = """#!/bin/bash
if [ "$1 $2" = "shell.bash hook" ]; then
  echo 'conda() { [ "$1" = activate ] && export CONDA_DEFAULT_ENV="$2" PATH="$FAKE_CONDA_ENVS/$2/bin:$PATH"; }'
fi
"""


def script(capsys, *argv: str) -> str:
    main(list(argv))
    return capsys.readouterr().out


def error_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_the_script_activates_conda_traps_the_notice_and_passes_the_cluster_lines(in_tmp, capsys):
    yaml_path = in_tmp / "s.yaml"
    yaml_path.write_text(SWEEP.replace("method: grid", "method: bayes\nmetric: {name: dev_loss, goal: minimize}"))
    text = script(capsys, str(yaml_path), "--print-agent-sbatch", "me/proj/abc123", "--conda-env", "lrscan",
                  "--count", "4", "--time", "4:00:00", "--partition", "gpu", "--gpus", "a100:1",
                  "--sbatch=--mem=8G", "--sbatch=-c 6")
    lines = text.splitlines()
    sbatch = [line for line in lines if line.startswith("#SBATCH")]
    assert sbatch == ["#SBATCH --job-name=agent-agent-test", "#SBATCH --ntasks=1", "#SBATCH -c 6",
                      f"#SBATCH --output={in_tmp}/slurm-agent-%j.out", "#SBATCH --open-mode=append",
                      "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --partition=gpu",
                      "#SBATCH --gpus=a100:1", "#SBATCH --time=4:00:00", "#SBATCH --mem=8G"]
    order = [lines.index(x) for x in ('eval "$(conda shell.bash hook)"', "conda activate lrscan", f"cd {in_tmp}",
                                      "export WANDB_RESUME=allow", "trap on_usr1 USR1")]
    assert order == sorted(order)
    assert ("( trap '' USR1; exec wandb agent --forward-signals --term-timeout 100 --count 4 me/proj/abc123 ) &"
            in lines)
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)

    # outside conda: this Python's environment first on PATH; no requeue when asked not to
    text = script(capsys, str(yaml_path), "--print-agent-sbatch", "abc123", "--conda-env", "", "--no-requeue",
                  "--signal-seconds", "300")
    assert f"export PATH={os.path.dirname(sys.executable)}:\"$PATH\"" in text and "conda" not in text
    assert "scontrol" not in text and "--requeue" not in text and "--signal=B:USR1@300" in text
    assert "--count" not in text and "--term-timeout 280" in text


def test_the_docs_show_the_script_their_command_prints(monkeypatch, capsys):
    page = (REPO / "docs" / "clusters.md").read_text()
    command = page.split("```bash\n", 1)[1].split("```", 1)[0]
    argv = shlex.split(command.replace("\\\n", " ").split(">")[0])
    assert argv[:3] == ["python", "-m", "lrscan.pipeline.sweep"]
    shown = page.split("## The script", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(REPO)
    assert script(capsys, *argv[3:]) == shown


def test_gpus_for_a_sweep_that_trains_on_the_cpu_get_a_note(in_tmp, capsys):
    yaml_path = in_tmp / "s.yaml"
    yaml_path.write_text(SWEEP)
    for flags in (["--gpus", "1"], ["--sbatch=--gres=gpu:a100:1"]):
        main([str(yaml_path), "--print-agent-sbatch", "abc", "--conda-env", "x", *flags])
        out, err = capsys.readouterr()
        assert out.startswith("#!/bin/bash") and "trains on the CPU" in err and "device: {value: cuda}" in err
    main([str(yaml_path), "--print-sbatch", "--gpus", "1"])
    assert "trains on the CPU" in capsys.readouterr().err
    yaml_path.write_text(SWEEP + "  device: {value: cuda}\n")
    main([str(yaml_path), "--print-agent-sbatch", "abc", "--conda-env", "x", "--gpus", "1"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flags, says", [
    (["--print-agent-sbatch", "me/proj/abc 123"], "a W&B sweep id"),
    (["--print-agent-sbatch", "abc", "--time", "1:00"], "longer than --signal-seconds 120"),
    (["--print-agent-sbatch", "abc", "--time", "4h"], "not a Slurm time"),
    (["--print-agent-sbatch", "abc", "--sbatch=--signal=USR2@60"], "set its lead with --signal-seconds"),
    (["--print-agent-sbatch", "abc", "--sbatch=mem=8G"], "an sbatch option on one line"),
    (["--print-agent-sbatch", "abc", "--partition", "a", "--sbatch=-p b"], "--partition given twice"),
    (["--print-agent-sbatch", "abc", "--workdir", "/shared/my runs"], "an absolute path without spaces"),
    (["--print-agent-sbatch", "abc", "--count", "0"], "--count 0"),
    (["--print-agent-sbatch", "abc", "--signal-seconds", "5"], "--signal-seconds 5: at least 30"),
])
def test_bad_agent_flags_are_one_line(in_tmp, capsys, flags, says):
    yaml_path = in_tmp / "s.yaml"
    yaml_path.write_text(SWEEP)
    assert says in error_of(capsys, str(yaml_path), "--conda-env", "lrscan", *flags)


def _job_folder(tmp: Path, words: Path) -> tuple[Path, Path, dict]:
    """A sweep, its server folder, a stand-in conda with an environment holding python3 and wandb, a stand-in
    scontrol that records its arguments; the environment a job starts in."""
    yaml_path = tmp / "agent.yaml"
    yaml_path.write_text(SWEEP)
    sweep = load_sweep(yaml_path)
    server = write_server(tmp / "server", yaml_path, [{"program": sweep.program,
                                                      "args": wandb_run_args(yaml_path, p)} for p in sweep.points])
    env_bin = tmp / "envs" / "lrscan" / "bin"
    wandb_command(env_bin, server)
    (env_bin / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (env_bin / "python3").chmod(0o755)
    tools = tmp / "tools"
    tools.mkdir()
    (tools / "conda").write_text(FAKE_CONDA)
    (tools / "conda").chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:/usr/bin:/bin", "FAKE_CONDA_ENVS": str(tmp / "envs"),
           "LRSCAN_DATA": str(words)}
    for var in ("WANDB_DIR", "WANDB_RESUME", "WANDB_RUN_ID", "CONDA_DEFAULT_ENV"):
        env.pop(var, None)
    return yaml_path, server, env


def _trainer_pid(run_id: str, workdir: Path, timeout_s: float = 120) -> int:
    """The pid of the trainer process of `run_id` in `workdir` (its command line, WANDB_RUN_ID and WANDB_DIR: another
    test may run a job of the same run ids at the same time), waited for."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if (b"lrscan.pipeline.train" in cmdline and f"WANDB_RUN_ID={run_id}".encode() in environ
                    and f"WANDB_DIR={workdir}".encode() in environ):
                return int(proc.name)
        time.sleep(0.2)
    raise AssertionError(f"no trainer process of {run_id} within {timeout_s:.0f} s")


def _wait_for(what, timeout_s: float, label: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"{label}: not within {timeout_s:.0f} s")
        time.sleep(0.2)


def _notice_mid_run(workdir: Path, send_notice) -> None:
    """Once run 0 has its first checkpoint: freeze its trainer, send the job its preemption notice, let the
    agent pass it on, thaw it. The notice lands in a run that has a checkpoint and has not finished."""
    ckpt = workdir / "checkpoints" / "agentrun0.pt"
    _wait_for(ckpt.exists, 180, "run 0's first checkpoint")
    pid = _trainer_pid("agentrun0", workdir)
    os.kill(pid, signal.SIGSTOP)
    assert not checkpoint.load(ckpt)["finished"]
    send_notice()
    time.sleep(2.0)  # the shell's trap and the agent's forwarding are quick; the frozen trainer keeps the signals
    os.kill(pid, signal.SIGCONT)


def _check_the_sweep_ran_with_one_preemption(workdir: Path, server: Path) -> None:
    log = read_log(server)
    kinds = [(event, run_id) for event, run_id, _, _ in log]
    assert kinds[:2] == [("run", "agentrun0"), ("requeued", "agentrun0")], log
    assert ("resume", "agentrun0") in kinds and ("run", "agentrun1") in kinds, log
    first_agent, second_agent = log[0][2], log[kinds.index(("resume", "agentrun0"))][2]
    assert first_agent != second_agent, "the preempted job's agent took another run after the notice"
    # (the end of run 1 is not heard: the agent stops at its --count, as the real one does, without asking again)
    assert [e for e in log if e[0] in ("ended", "requeued")] == [
        ["requeued", "agentrun0", first_agent, 138], ["ended", "agentrun0", second_agent, 0]], log
    # the preempted run: two segments of one run id, every step once
    segments = sorted(workdir.glob("wandb/offline-run-*-agentrun0/run-agentrun0.wandb"))
    assert len(segments) == 2
    runs = [read_run_file(p) for p in segments]
    assert [r.exit_code for r in runs] == [138, 0] and {r.run_id for r in runs} == {"agentrun0"}
    assert runs[1].sweep_id == runs[0].sweep_id != ""
    steps = np.concatenate([r.history["step"] for r in runs])
    assert sorted(steps.tolist()) == list(range(STEPS)), "a lost or repeated step"
    assert checkpoint.load(workdir / "checkpoints" / "agentrun0.pt")["finished"]
    [other] = workdir.glob("wandb/offline-run-*-agentrun1/run-agentrun1.wandb")
    other = read_run_file(other)
    assert other.exit_code == 0 and other.history["step"].tolist() == list(range(STEPS))


@pytest.mark.slow
def test_a_preempted_agent_job_requeues_and_its_run_resumes_in_the_next_job(tmp_path, words_file, capsys):
    """Slurm's part played by hand: bash runs the script with the job's variables, the notice is a SIGUSR1 to
    the shell, the requeue a stand-in scontrol that records it, the requeued job the same script run again."""
    yaml_path, server, env = _job_folder(tmp_path, words_file)
    (tmp_path / "tools" / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    (tmp_path / "tools" / "scontrol").chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    text = script(capsys, str(yaml_path), "--print-agent-sbatch", "me/proj/sweep1", "--conda-env", "lrscan",
                  "--count", "2", "--workdir", str(workdir), "--time", "10:00")
    (tmp_path / "agent.sbatch").write_text(text)

    def job(restart: int) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(tmp_path / "agent.sbatch")], cwd="/", start_new_session=True,
                                env={**env, "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": str(restart)},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first = job(0)
    try:
        _notice_mid_run(workdir, lambda: first.send_signal(signal.SIGUSR1))
        first_out, _ = first.communicate(timeout=180)
    except (AssertionError, subprocess.TimeoutExpired) as e:
        os.killpg(first.pid, signal.SIGKILL)
        raise AssertionError(f"{e}; the job's output:\n{first.communicate()[0]}") from None
    assert "lrscan: preemption notice: requeueing job 4242" in first_out, first_out
    # the run the notice stopped ended with the preemption's exit code, marked preempting: what the sweep requeues
    _wait_for(lambda: run_end(workdir, "agentrun0")[0] is not None, 60, "run 0's exit record")
    assert run_end(workdir, "agentrun0") == (138, True), (run_end(workdir, "agentrun0"), first_out)
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert checkpoint.load(workdir / "checkpoints" / "agentrun0.pt")["step"] < STEPS

    second = job(1)
    try:
        out, _ = second.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(second.pid, signal.SIGKILL)
        raise AssertionError(f"the requeued job did not end; its output:\n{second.communicate()[0]}") from None
    assert second.returncode == 0, out
    assert "lrscan: job 4242 (restart 1)" in out and "resuming run agentrun0 at step" in out, \
        f"{out}\nthe server's log: {read_log(server)}\nthe first job's output:\n{first_out}"
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    _check_the_sweep_ran_with_one_preemption(workdir, server)


def _job_field(job_id: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=10).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith(field + "=")), "")


@pytest.mark.slow
def test_real_slurm_requeues_a_preempted_agent_job_and_the_run_resumes(tmp_path, words_file, capsys):
    """The same job through a real Slurm: sbatch, the notice sent as `--signal=B:USR1` sends it (scancel
    --batch --signal=USR1), the requeue by the script's real `scontrol requeue`. Slurm holds a requeued job
    for about two minutes (its EligibleTime); the test lets it start 10 s later (scontrol update StartTime)."""
    need_slurm()
    yaml_path, server, env = _job_folder(tmp_path, words_file)
    workdir = tmp_path / "work"
    workdir.mkdir()
    text = script(capsys, str(yaml_path), "--print-agent-sbatch", "me/proj/sweep1", "--conda-env", "lrscan",
                  "--count", "2", "--workdir", str(workdir), "--time", "10:00")
    (tmp_path / "agent.sbatch").write_text(text)
    env["PATH"] = f"{env['PATH']}:{os.path.dirname(shutil.which('sbatch'))}"
    submitted = subprocess.run(["sbatch", "--parsable", str(tmp_path / "agent.sbatch")], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    log = workdir / f"slurm-agent-{job_id}.out"
    try:
        _notice_mid_run(workdir, lambda: subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True,
                                                        timeout=30))
        _wait_for(lambda: _job_field(job_id, "Restarts") == "1" and _job_field(job_id, "JobState") == "PENDING",
                  180, f"job {job_id} requeued")
        # not at once: slurmd refuses to launch a job id it has just killed ("already killed")
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+10"], check=True, timeout=30)
        _wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True,
                                         timeout=10).stdout.strip() == "", 300, f"job {job_id} done")
    finally:
        subprocess.run(["scancel", job_id], timeout=30)
    out = log.read_text()
    assert "lrscan: preemption notice: requeueing job" in out and f"lrscan: job {job_id} (restart 1)" in out, out
    assert "resuming run agentrun0 at step" in out, out
    _check_the_sweep_ran_with_one_preemption(workdir, server)
