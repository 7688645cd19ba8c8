"""The local runner end to end with the real trainer: offline runs, their identity, checkpoints, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrscan.pipeline import keys
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.manifest import read_manifest
from lrscan.pipeline.sweep.spec import load_sweep

pytestmark = pytest.mark.slow


def trainer_sweep(folder: Path, parameters: str, name: str = "tiny") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        # a tiny range test through the real trainer
        name: {name}
        program: pipeline/train/__main__.py
        command: ["${{env}}", python3, -m, lrscan.pipeline.train, "${{args}}"]
        method: grid
        metric: {{name: best_smooth_loss, goal: minimize}}
        parameters:
        """) + textwrap.indent(textwrap.dedent(parameters), "  "))
    return path


def run_cli(*args: str, cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lrscan.pipeline.sweep", *args, "--no-progress"], cwd=cwd,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_files(folder: Path, run_id: str) -> list[Path]:
    return sorted((folder / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def test_a_sweep_of_real_training_runs_lands_offline_with_the_sweeps_identity(tmp_path, words_file):
    path = trainer_sweep(tmp_path, """\
        schedule: {value: range}
        steps: {value: 30}
        n_hidden: {value: 8}
        samples: {value: 0}
        lre_min: {value: -3.0}
        seed: {values: [1, 2]}
        """)
    sweep = load_sweep(path)
    proc = run_cli(str(path), "--workers", "2", cwd=tmp_path, env={"LRSCAN_DATA": str(words_file)})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    folder = tmp_path / "runs" / sweep.key
    m = read_manifest(folder)
    assert m["state"].tolist() == ["finished", "finished"] and m["exit_code"].tolist() == [0, 0]
    for row in m.itertuples():
        [path_] = run_files(folder, row.run_id)
        rf = read_run_file(path_)
        assert (rf.run_id, rf.group, rf.exit_code) == (row.run_id, sweep.key, 0)
        assert "tiny" in rf.tags
        # the run's config holds exactly the point's parameters
        assert {k: rf.config[k] for k in row.config} == row.config
        assert rf.config["run_id"] == row.run_id
        np.testing.assert_array_equal(rf.history["step"], np.arange(30))
        assert np.isfinite(rf.history[keys.LOG10_LOSS]).all()
        assert keys.BEST_SMOOTH_LOSS in rf.summary
        assert (folder / "checkpoints" / f"{row.run_id}.pt").is_file()


def test_a_stopped_sweep_resumes_its_runs_from_their_checkpoints(tmp_path, words_file):
    path = trainer_sweep(tmp_path, """\
        schedule: {value: constant}
        steps: {value: 12000}
        n_hidden: {value: 8}
        samples: {value: 0}
        ckpt_every_steps: {value: 2000}
        log_chunk_steps: {value: 100}
        seed: {values: [1]}
        """, name="resumable")
    sweep = load_sweep(path)
    folder = tmp_path / "runs" / sweep.key
    run_id = run_id_for(sweep.key, 0)
    ckpt = folder / "checkpoints" / f"{run_id}.pt"
    proc = run_cli(str(path), cwd=tmp_path, env={"LRSCAN_DATA": str(words_file)})
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the test could stop it"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    first = read_manifest(folder).iloc[0]
    assert first["state"] == "killed"
    proc = run_cli(str(path), cwd=tmp_path, env={"LRSCAN_DATA": str(words_file)})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    m = read_manifest(folder).iloc[0]
    assert (m["state"], m["attempts"]) == ("finished", 2)
    log = (folder / m["log"]).read_text()
    assert f"resuming run {run_id} at step" in log
    # one run id, two segments; together every step exactly once
    segments = [read_run_file(p) for p in run_files(folder, run_id)]
    assert len(segments) == 2
    steps = np.concatenate([s.history["step"] for s in segments])
    pd.testing.assert_series_equal(pd.Series(np.sort(steps)), pd.Series(np.arange(12000)))
