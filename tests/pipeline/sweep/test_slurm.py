"""Slurm job arrays: the script, run as Slurm runs each array task, and through a real Slurm where one is up."""

from __future__ import annotations

import os
import subprocess

import pandas as pd
import pytest

from lrscan.pipeline.sweep.__main__ import main
from lrscan.pipeline.sweep.slurm import time_seconds
from lrscan.pipeline.sweep.spec import load_sweep
from tests.pipeline.sweep.fakes import expected, manifest, need_slurm, records, write_sweep


@pytest.mark.slow
def test_sbatch_script_runs_one_point_per_array_task(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sweep = load_sweep(path)
    main([str(path), "--print-sbatch", "--out", "shared"])
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-2" in script and '--index "$SLURM_ARRAY_TASK_ID"' in script
    (in_tmp / "array.sh").write_text(script)
    # what Slurm does for each task: the same script, with the array variables set (run concurrently)
    tasks = [subprocess.Popen(["bash", str(in_tmp / "array.sh")], cwd="/", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_JOB_ID": "77",
                                   "SLURM_JOB_ID": str(78 + i), "SLURM_ARRAY_TASK_COUNT": "3"})
             for i in range(3)]
    for t in tasks:
        _, err = t.communicate(timeout=120)
        assert t.returncode == 0, err
    folder = in_tmp / "shared" / sweep.key
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 3, [1] * 3, [0] * 3))
    assert {r[0]["env"]["LRSCAN_SWEEP_INDEX"] for r in records(folder, "starts").values()} == {"0", "1", "2"}
    with pytest.raises(SystemExit) as exc:  # an array larger than the grid
        main([str(path), "--out", "shared", "--index", "3", "--no-progress"])
    assert exc.value.code == 2 and "has 3 points (0..2)" in capsys.readouterr().err


def test_draining_workers_variant_of_the_script(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    main([str(path), "--print-sbatch", "--array-tasks", "2"])
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script and "--workers 1" in script and "--index" not in script


def test_the_array_script_takes_the_clusters_lines(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    main([str(path), "--print-sbatch", "--partition", "gpu", "--gpus", "2", "--time", "1-12",
          "--sbatch=--account=abc", "--sbatch=-J mine", "--sbatch=--mem=8G"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#SBATCH")]
    # an extra line replaces the script's own line for its option (-J is --job-name), the rest follow in order
    assert lines == ["#SBATCH -J mine", "#SBATCH --array=0-2", "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=1",
                     "#SBATCH --partition=gpu", "#SBATCH --gpus=2", "#SBATCH --time=1-12", "#SBATCH --account=abc",
                     "#SBATCH --mem=8G"]
    for flags, says in [(["--sbatch=--array=0-9"], "the array is the sweep's"),
                        (["--time", "90 min"], "one word, no spaces"),
                        (["--time", "1:2:3:4"], "not a Slurm time"),
                        (["--gpus", "1", "--sbatch=-G 2"], "--gpus given twice"),
                        (["--sbatch=#SBATCH --mem=1G"], "an sbatch option on one line"),
                        (["--sbatch", "--mem=1G"], "goes after an =: --sbatch=--mem=8G")]:
        with pytest.raises(SystemExit) as exc:
            main([str(path), "--print-sbatch", *flags])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("text, seconds", [("90", 5400), ("5:30", 330), ("4:00:00", 14400), ("1-12", 129600),
                                           ("2-3:04", 183840), ("0-0:0:45", 45)])
def test_slurm_time_formats(text, seconds):
    assert time_seconds(text) == seconds


@pytest.mark.slow
def test_real_sbatch_array(in_tmp, capsys):
    need_slurm()
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sweep = load_sweep(path)
    # the cluster's lines as a real sbatch reads them (this one-node Slurm has a partition `debug`, no GPUs)
    main([str(path), "--print-sbatch", "--out", str(in_tmp / "shared"), "--partition", "debug", "--time", "5:00",
          "--sbatch=--mem=200M"])
    (in_tmp / "array.sh").write_text(capsys.readouterr().out)
    done = subprocess.run(["sbatch", "--parsable", "--wait", "array.sh"], cwd=in_tmp, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr + "".join(p.read_text() for p in in_tmp.glob("slurm-*.out"))
    folder = in_tmp / "shared" / sweep.key
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 3, [1] * 3, [0] * 3))
