"""The study end to end on a tiny size, and its faults done for real: kills, damaged files, divergence, secrets,
no network, no credentials."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from lrscan.analysis.report import write_report
from lrscan.analysis.sources import load_runs
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import BLOCK_BYTES, CHUNK_HEADER, CHUNK_HEADER_BYTES, FULL, HEADER, read_run_file
from lrscan.pipeline.study.decay import check_decay_points
from lrscan.pipeline.study.study import SIZES, Size, Study
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SMALL = {"n_embd": {"value": 2}, "n_hidden": {"value": 16}, "samples": {"value": 0}}
# the range grid: lre_max 0 (a normal test) and 40 (lr up to 1e40: diverges) x two seeds
TINY = Size(
    range_overrides={**SMALL, "steps": {"value": 300}, "lre_min": {"value": -3.0}, "lre_max": {"values": [0.0, 40.0]},
                     "seed": {"values": [1, 2]}, "climb_burn_in_steps": {"value": 30},
                     "stop_on_climb": {"value": False}},
    decay_overrides={**SMALL, "steps": {"value": 400}, "decay_steps": {"values": [[100], [200]]},
                     "eval_every_steps": {"value": 200}},
    block_steps=100,
)


def tiny_study(out: Path, **kw) -> Study:
    kw.setdefault("decay_factors", (0.1,))  # two decay points: decay_steps 100 and 200, each to lr x 0.1
    kw.setdefault("wandb_mode", "offline")
    kw.setdefault("prove", False)  # these tests are about the other stages; the prove stage's are in test_prove.py
    return Study(size=kw.pop("size", TINY), out=out, workers=2, project=kw.pop("project", ""),
                 entity=kw.pop("entity", ""), range_yaml=REPO / "sweeps" / "lr_range.yaml",
                 decay_yaml=REPO / "sweeps" / "decay_grid.yaml",
                 n_boot=200, **kw)


@pytest.fixture
def data_env(words_file, monkeypatch):
    monkeypatch.setenv("LRSCAN_DATA", str(words_file))
    return words_file


SECRET = "lrscansecret" + "0123456789abcdef" * 2
STUDY_CODE = ("import sys; from pathlib import Path; from tests.pipeline.study.test_study import tiny_study; "
              "tiny_study(Path(sys.argv[1])).run()")


# the tests that read the one `study` below: kept on one xdist worker (`make test`'s --dist=loadgroup), so
# the study is run once, not once per worker
ONE_STUDY = pytest.mark.xdist_group("tiny_study")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study, run as a user runs it (a process of its own) with WANDB_API_KEY set."""
    root = tmp_path_factory.mktemp("study")
    from tests.conftest import make_words

    words = root / "words.txt"
    words.write_text("\n".join(make_words()) + "\n")
    out = root / "study"
    env = {**os.environ, "LRSCAN_DATA": str(words), "WANDB_API_KEY": SECRET, "WANDB_SILENT": "true",
           "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "-c", STUDY_CODE, str(out)], cwd=REPO, env=env, capture_output=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    return {"out": out, "words": words, "stdout": p.stdout + p.stderr,
            "summary": json.loads((out / "report" / "summary.json").read_text())}


@ONE_STUDY
def test_tiny_study_end_to_end(study, monkeypatch):
    out, summary = study["out"], study["summary"]
    monkeypatch.setenv("LRSCAN_DATA", str(study["words"]))
    assert b"picked lre =" in study["stdout"]
    assert -3.0 <= summary["best_lre"] <= 0.0
    low, high = summary["best_lre_ci"]
    assert low <= summary["best_lre"] <= high
    assert set(summary["suggesters"]) == {"min_loss", "fastai_minimum", "steepest", "valley", "minimum"}
    assert summary["suggesters"]["minimum"] == summary["suggesters"]["min_loss"] == summary["best_lre"]  # old readers
    assert summary["range"]["counts"]["runs_read"] == 4 and summary["decay"]["counts"]["runs_read"] == 2
    assert len(summary["commands"]) == 4
    report = (out / "report" / "report.md").read_text()
    assert "Picked exponent" in report and "python -m lrscan.pipeline.sweep" in report
    assert (out / "report" / "range" / "range_loss_vs_lre.png").stat().st_size > 10_000
    # the decay grid ran at the picked lr, exactly (not rounded), and decayed to that lr x 0.1
    best_lr = 10.0 ** summary["best_lre"]
    decay_yaml = yaml.safe_load((out / "stages" / "decay_grid.yaml").read_text())["parameters"]
    assert decay_yaml["lr"] == {"value": best_lr} and decay_yaml["decay_lrs"] == {"values": [[best_lr * 0.1]]}
    decay_runs = load_runs(next((out / "sweeps").glob("decay_grid-*")) / "wandb").runs
    assert decay_runs["lr"].tolist() == [best_lr, best_lr]
    assert summary["decay"]["lr"] == best_lr and summary["decay"]["decay_factors"] == [[0.1]]
    # --no-prove: the decay grid trains at the min-loss pick, as before the prove stage
    assert (summary["chosen_by"], summary["chosen_lr"], summary["prove"]) == ("pick", best_lr, [])
    # the winner in words and a table of 4 significant digits: never a Python dict, never [200]
    last = next(line for line in study["stdout"].decode().splitlines() if line.startswith("Best decay config"))
    assert last.startswith(f"Best decay config at lr {best_lr:.4g}: decay_steps ") and "(the picked lr x 0.1)" in last
    assert "{'" not in last and "[" not in last
    best = summary["decay"]["best"]
    assert f"final dev loss {best['value']:.4g}, the lowest of 2 configs." in last
    assert last.split(": decay_steps ")[1].split(",")[0] in ("100", "200")
    assert "| decay_steps | decay_lrs | x picked lr | final_dev_loss |" in report and "{'" not in report
    assert f"| {best_lr * 0.1:.4g} | 0.1 | " in report and "| [100]" not in report
    # how the CI was made, from how many seeds (2 here: too few, and it says so)
    assert summary["ci_method"]["n_units"] == 2 and summary["ci_method"]["distinct_resamples"] == 3
    assert "too few seeds" in report and "percentile bootstrap over seeds (2 seeds" in report
    assert any("only 2 seeds" in note for note in summary["notes"])
    # a second run of the same command runs nothing again and keeps the pick; it replaces its own
    # reports, also ones from before reports carried a marker
    manifests = sorted((out / "sweeps").glob("*/manifest.jsonl"))
    before = [m.read_text() for m in manifests]
    (out / "report" / "range" / ".lrscan-report.json").unlink()
    again = tiny_study(out).run()
    assert (out / "report" / "range" / ".lrscan-report.json").is_file()
    assert again["best_lre"] == pytest.approx(summary["best_lre"])
    after = [json.loads(line) for m in manifests for line in m.read_text().splitlines()]
    assert all(row["attempts"] == 1 for row in after), "a finished point ran again"
    assert len(before) == 2


def _manifest_rows(folder: Path) -> list[dict]:
    rows = []
    for m in folder.glob("sweeps/*/manifest.jsonl"):
        rows += [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
    return rows


def test_killed_study_resumes_without_running_a_point_twice(data_env, tmp_path):
    out = tmp_path / "study"
    env = {**os.environ, "LRSCAN_DATA": str(data_env)}
    code = ("import sys; from pathlib import Path; from tests.pipeline.study.test_study import tiny_study; "
            "tiny_study(Path(sys.argv[1])).run()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it (all of it) once the decay sweep has started a point
    deadline = time.monotonic() + 240
    while not any(r.get("state") == "running" and "decay" in r.get("run_id", "") for r in _manifest_rows(out)):
        assert time.monotonic() < deadline, "the decay sweep never started"
        assert proc.poll() is None, "the study ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    summary = tiny_study(out).run()
    rows = _manifest_rows(out)
    assert len(rows) == 6 and all(r["state"] == "finished" for r in rows)
    range_rows = [r for r in rows if "lr_range" in r["run_id"]]
    assert all(r["attempts"] == 1 for r in range_rows), "a finished range point ran again"
    # every run's history has each step exactly once, across all its segments
    loaded = load_runs(out / "sweeps", job_type=None)
    per_run = loaded.steps.groupby("run_id", observed=True)["step"].agg(["count", "nunique", "min", "max"])
    assert (per_run["count"] == per_run["nunique"]).all() and (per_run["min"] == 0).all()
    assert summary["best_lre"] is not None


def _records_after_the_history(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the one-chunk records after a log's last history record that are neither
    summary nor exit (telemetry and the like: nothing the analysis reads), found by walking the framing."""
    from wandb.proto import wandb_internal_pb2

    found, pos = [], len(HEADER)
    while pos + CHUNK_HEADER_BYTES <= len(data):
        left = BLOCK_BYTES - pos % BLOCK_BYTES
        _, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if left < CHUNK_HEADER_BYTES or (kind == 0 and length == 0):
            pos += left  # the block's zero tail
            continue
        if pos + CHUNK_HEADER_BYTES + length > len(data):
            break  # a torn last chunk
        if kind == FULL:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data[pos + CHUNK_HEADER_BYTES : pos + CHUNK_HEADER_BYTES + length])
            which = record.WhichOneof("record_type")
            if which == "history":
                found = []
            elif which not in ("summary", "exit", "run", "config") and length >= 8:
                found.append((pos, length))
        pos += CHUNK_HEADER_BYTES + length
    return found


@ONE_STUDY
def test_damaged_files_among_good_ones_keep_the_pick(study, tmp_path):
    out = study["out"]
    folder = next((out / "sweeps").glob("lr_range-*"))
    clean = write_report(tmp_path / "clean", load_runs(folder / "wandb"), block_steps=100, n_boot=200)
    # a truncated decay run (not range data) and a range run with a bit flipped in a record after its history
    damaged = tmp_path / "damaged"
    shutil.copytree(folder / "wandb", damaged)
    decay_file = next((out / "sweeps").glob("decay_grid-*/wandb/offline-run-*/run-*.wandb"))
    cut = damaged / "offline-run-truncated" / decay_file.name
    cut.parent.mkdir()
    cut.write_bytes(decay_file.read_bytes()[: decay_file.stat().st_size // 2 + 123])
    # the record is located, not guessed from the file's size: a run's layout differs from run to run
    # (a resumed run has two files, the first without closing records)
    targets = [(path, at) for path in sorted(damaged.glob("offline-run-*/run-*.wandb")) if path.parent != cut.parent
               for at in _records_after_the_history(path.read_bytes())]
    assert targets, "no range run has a record after its history to damage"
    flipped, (offset, length) = targets[0][0], targets[0][1]
    before = read_run_file(flipped)
    data = bytearray(flipped.read_bytes())
    data[offset + CHUNK_HEADER_BYTES + length // 2] ^= 0xFF  # inside the payload: the chunk's crc no longer matches
    flipped.write_bytes(bytes(data))
    after = read_run_file(flipped)
    assert after.skipped_records == before.skipped_records + 1
    assert after.history.keys() == before.history.keys()  # a record that held no step: every step still read
    for key in before.history:
        np.testing.assert_array_equal(after.history[key], before.history[key])
    loaded = load_runs(damaged, job_type=None)
    assert loaded.skipped_records >= 1 and loaded.problems
    report = write_report(tmp_path / "report", load_runs(damaged), block_steps=100, n_boot=200)
    assert report.summary["best_lre"] == clean.summary["best_lre"]
    assert report.summary["best_lre_ci"] == clean.summary["best_lre_ci"]
    assert report.summary["counts"]["records_skipped"] >= 1


@ONE_STUDY
def test_diverged_runs_are_recorded_excluded_and_shown(study):
    summary = study["summary"]
    per_run = summary["range"]["per_run"]
    diverged = [r for r in per_run if r.get("stop_reason") == "non_finite"]
    assert len(diverged) == 2 and all(r.get("lre_max") in (40, 40.0, None) for r in diverged)
    # the pick comes from where the loss was measured and finite, not from the blown-up tail
    assert -3.0 <= summary["best_lre"] <= 1.0
    text = (study["out"] / "report" / "range" / "report.md").read_text()
    assert "non_finite" in text


@ONE_STUDY
def test_api_key_never_lands_on_disk(study):
    assert SECRET.encode() not in study["stdout"]
    leaks = [f for f in study["out"].rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert not leaks, f"the API key is in {leaks}"


def test_study_sizes_and_bad_input(tmp_path):
    assert set(SIZES) == {"smoke", "demo", "full"}  # smoke: seconds, does it run here?
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", "--wandb_mode=online",
                        f"--out={tmp_path / 's'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "needs --project" in p.stderr and not (tmp_path / "s").exists()


@ONE_STUDY
def test_online_study_analyses_from_the_public_api(study, tmp_path, monkeypatch):
    """The cloud is unreachable here: the study's online analysis reads fakes with the Public API's
    shape, built from the offline study's own runs, and must pick what the offline analysis picked."""
    from lrscan.pipeline.runlog import read_run_file
    from lrscan.pipeline.sweep import load_sweep
    from tests.support.public_api_fakes import FakeApi, FakeRun

    monkeypatch.setenv("LRSCAN_CACHE", str(tmp_path / "cache"))
    out = study["out"]
    sweep = load_sweep(out / "stages" / "lr_range.yaml")
    runs = []
    for path in sorted((out / "sweeps" / sweep.key / "wandb").glob("offline-run-*/run-*.wandb")):
        rf = read_run_file(path, keys=["lr", "lre", "loss", "log10_loss", "smooth_loss"])
        names = [k for k in rf.history if k != "step"]
        rows = [(int(s), {k: float(rf.history[k][i]) for k in names}) for i, s in enumerate(rf.history["step"])]
        spec = {"name": rf.name, "group": rf.group, "tags": rf.tags, "job_type": rf.job_type, "config": rf.config,
                "rows": rows, "summary": rf.summary, "exit_code": rf.exit_code}
        runs.append(FakeRun(rf.run_id, spec))
    api = FakeApi(runs)
    online = Study(size=TINY, out=tmp_path / "online", workers=1, wandb_mode="online", project="lrscan", entity="me",
                   range_yaml=REPO / "sweeps" / "lr_range.yaml", decay_yaml=REPO / "sweeps" / "decay_grid.yaml",
                   n_boot=200, api=api)
    report = online.analyse(sweep, "range")
    assert api.calls and api.calls[0][0] == "me/lrscan"
    offline = json.loads((out / "report" / "range" / "summary.json").read_text())
    assert report.summary["best_lre"] == pytest.approx(offline["best_lre"])
    assert report.summary["counts"]["runs_read"] == offline["counts"]["runs_read"] == 4
    assert any("lrscan analyze me/lrscan --group" in c for c in online.commands)


# -- the decay grid follows the pick ---------------------------------------------------------------


@pytest.mark.parametrize("best_lre", [-6.5, -5.123456789, -0.99])
def test_the_decay_grid_trains_at_the_picked_lr_exactly_and_decays_below_it(tmp_path, best_lre):
    """round(lr, 6) made lre -6.5 an lr of 0 and left one digit near -5; absolute decay_lrs then went up."""
    from lrscan.pipeline.config import parse_args
    from lrscan.pipeline.sweep.command import build_command

    study = tiny_study(tmp_path / "s", decay_factors=(0.1, 0.01))
    study.out.mkdir()
    sweep = study.decay_sweep(best_lre)
    best_lr = 10.0 ** best_lre
    assert len(sweep.points) == 4  # 2 boundaries x 2 factors
    for point in sweep.points:
        argv, _ = build_command(sweep.command, sweep.program, point, "unused.json")
        config = parse_args(argv[argv.index("lrscan.pipeline.train") + 1:])  # what the trainer is launched with
        assert config.lr == best_lr
        assert config.decay_lrs in ((best_lr * 0.1,), (best_lr * 0.01,)) and config.decay_lrs[0] < config.lr


def test_decay_factors_per_boundary_and_bad_ones(tmp_path):
    two_steps = Size(range_overrides=TINY.range_overrides, block_steps=100,
                     decay_overrides={**TINY.decay_overrides, "decay_steps": {"values": [[100, 200]]}})
    study = tiny_study(tmp_path / "s", size=two_steps, decay_factors="[[0.1, 0.01]]")
    study.out.mkdir()
    (point,) = study.decay_sweep(-1.0).points
    assert point["decay_lrs"] == [0.1 * 0.1, 0.1 * 0.01]
    # one factor for two boundaries: one line, before any run
    mismatched = tiny_study(tmp_path / "m", size=two_steps, decay_factors="0.1")
    mismatched.out.mkdir()
    with pytest.raises(LrscanError, match="2 boundaries but decay_lrs .* has 1 lrs"):
        mismatched.decay_sweep(-1.0)
    for bad in ("1.0", "0", "2,0.1", "[[0.01, 0.1]]", "abc", "[0.1", ""):
        with pytest.raises(LrscanError, match="--decay_factors"):
            tiny_study(tmp_path / "b", decay_factors=bad)
    assert not (tmp_path / "b").exists()
    # a grid whose decayed lr is not below its base lr is refused whoever wrote it
    with pytest.raises(LrscanError, match="is not a decay"):
        check_decay_points(SimpleNamespace(points=({"lr": 0.001, "decay_steps": [100], "decay_lrs": [0.01]},)))
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", "--decay_factors=1.5",
                        f"--out={tmp_path / 'cli'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--decay_factors=1.5" in p.stderr
    assert not (tmp_path / "cli").exists()


def test_the_pick_has_enough_seeds_for_its_ci():
    """3 seeds give a bootstrap of 10 distinct resamples: the demo runs 5, lr_range.yaml (the full study) 8."""
    from lrscan.analysis.pick import MIN_SEEDS_FOR_CI

    assert len(SIZES["demo"].range_overrides["seed"]["values"]) >= MIN_SEEDS_FOR_CI
    assert "seed" not in SIZES["full"].range_overrides
    for name in ("lr_range.yaml", "lr_range_pairs.yaml"):
        seeds = yaml.safe_load((REPO / "sweeps" / name).read_text())["parameters"]["seed"]["values"]
        assert len(set(seeds)) >= 8, name


# -- online: credentials, the server and the entity, checked in seconds before stage 1 -----------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _online_study(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k not in ("NETRC", "HOME")}
    full_env = {**clean, "HOME": str(home), "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"), "WANDB_SILENT": "true",
                **env}
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", "--wandb_mode=online", "--project=lrscan",
                        f"--out={tmp_path / 'study'}"], cwd=REPO, env=full_env, capture_output=True, text=True,
                       timeout=120)
    return p, time.monotonic() - started


def _one_line(p: subprocess.CompletedProcess, tmp_path: Path) -> str:
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.startswith("lrscan study: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "study").exists()  # nothing written, nothing run
    return p.stderr


def test_online_without_an_api_key_is_one_line_in_seconds(tmp_path):
    p, seconds = _online_study(tmp_path)  # an empty HOME: no netrc, no WANDB_API_KEY
    err = _one_line(p, tmp_path)
    assert "no W&B API key for https://api.wandb.ai" in err and "wandb login" in err
    assert seconds < 60  # once: a whole sweep of points that could not start, the cause only in logs/


@pytest.mark.parametrize("key_from", ["env", "netrc"])
def test_online_with_a_key_and_no_server_is_one_line_in_seconds(tmp_path, key_from):
    url = f"http://127.0.0.1:{_closed_port()}"
    env = {"WANDB_BASE_URL": url}
    if key_from == "env":
        env["WANDB_API_KEY"] = SECRET
    else:  # found where wandb looks: the netrc entry `wandb login` writes
        (tmp_path / "home").mkdir()
        netrc = tmp_path / "home" / ".netrc"
        netrc.write_text(f"machine {url.removeprefix('http://')}\n  login user\n  password {SECRET}\n")
        netrc.chmod(0o600)
    p, seconds = _online_study(tmp_path, **env)
    err = _one_line(p, tmp_path)
    assert f"cannot reach the W&B server {url}" in err and SECRET not in err
    assert seconds < 60  # once: each run blocked ~90 s in wandb.init, nothing shown


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A loopback "server" that answers every request 401: reachable, and refusing the key."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(401)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _refuse

    def log_message(self, *args) -> None:
        pass


def test_online_when_the_public_api_refuses_is_one_line(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        p, _ = _online_study(tmp_path, WANDB_API_KEY=SECRET, WANDB_BASE_URL=url)
    finally:
        server.shutdown()
        server.server_close()
    err = _one_line(p, tmp_path)  # once: wandb.Api()'s traceback
    assert f"the W&B Public API at {url} failed: " in err and SECRET not in err


class _BrokenEntityApi:
    @property
    def default_entity(self):
        raise RuntimeError("viewer query failed\nwith a long GraphQL trace")


def test_online_without_a_default_entity_says_how_to_pass_one(tmp_path):
    from tests.support.public_api_fakes import FakeBackend, OfflineApi

    # wandb's own Api.default_entity, over a server whose viewer has no entity: it returns None
    api = OfflineApi(FakeBackend([], viewer_entity=None))
    study = tiny_study(tmp_path / "s", wandb_mode="online", project="lrscan", api=api)
    with pytest.raises(LrscanError, match=r"pass --entity=NAME") as info:
        study.run()
    assert "None/" not in str(info.value) and not (tmp_path / "s").exists()
    with pytest.raises(LrscanError, match=r"\(viewer query failed\); pass --entity=NAME$"):
        tiny_study(tmp_path / "s", wandb_mode="online", project="lrscan", api=_BrokenEntityApi()).run()
    assert not (tmp_path / "s").exists()


# -- the study on your own model (issue 14) ---------------------------------------------------------

WAVENET = "examples/wavenet.py:make"
TASK_TINY = Size(
    range_overrides={"steps": {"value": 200}, "lre_min": {"value": -4.0}, "lre_max": {"value": 0.0},
                     "seed": {"values": [1, 2]}, "climb_burn_in_steps": {"value": 50}},
    decay_overrides={"steps": {"value": 200}, "decay_steps": {"values": [[100], [150]]},
                     "eval_every_steps": {"value": 100}},
    block_steps=50,
)


def test_a_study_on_your_own_model(words_file, tmp_path, monkeypatch):
    """--task and --task_args reach both sweeps as fixed parameters: range test over seeds, pick, decay grid, report."""
    monkeypatch.chdir(REPO)  # the task's path is relative, as a user types it; the sweeps' processes inherit it
    task_args = {"data": str(words_file), "n_embd": 4, "n_hidden": 16, "block_size": 4}
    out = tmp_path / "s"
    summary = tiny_study(out, size=TASK_TINY, task=WAVENET, task_args=str(task_args), lre_min=-4, lre_max=-1).run()
    assert summary["task"] == WAVENET and summary["task_args"] == task_args
    assert -4.0 <= summary["best_lre"] <= -1.0 and summary["n_seeds"] == 2
    range_parameters = yaml.safe_load((out / "stages" / "lr_range.yaml").read_text())["parameters"]
    assert range_parameters["lre_min"] == {"value": -4.0} and range_parameters["lre_max"] == {"value": -1.0}
    for stage in ("lr_range.yaml", "decay_grid.yaml"):
        parameters = yaml.safe_load((out / "stages" / stage).read_text())["parameters"]
        assert parameters["task"] == {"value": WAVENET} and parameters["task_args"] == {"value": task_args}
    runs = load_runs(out / "sweeps").runs
    assert len(runs) == 4 and set(runs["task"].astype(str)) == {WAVENET}
    decay = runs[runs["schedule"].astype(str) == "step"]
    assert decay["lr"].tolist() == [10.0 ** summary["best_lre"]] * 2
    assert np.isfinite(decay["dev_loss"].astype(float)).all() and np.isfinite(decay["test_loss"].astype(float)).all()
    assert (out / "report" / "report.md").read_text().startswith(f"# lrscan study (custom, task {WAVENET})")


def test_a_task_that_does_not_load_is_one_line_before_anything_is_written(tmp_path):
    with pytest.raises(LrscanError, match=r"^task='examples/nope.py:make': task file 'examples/nope.py' does not"):
        tiny_study(tmp_path / "s", task="examples/nope.py:make").run()
    with pytest.raises(LrscanError, match=r"^task_args=\{'n_embd': 4\} given without --task"):
        tiny_study(tmp_path / "s", task_args="{'n_embd': 4}")
    with pytest.raises(LrscanError, match=r"^--lre_min and --lre_max go together"):
        tiny_study(tmp_path / "s", lre_min=-4)
    with pytest.raises(LrscanError, match=r"^--lre_min=-1 --lre_max=-4: need finite exponents, lre_min < lre_max$"):
        tiny_study(tmp_path / "s", lre_min=-1, lre_max=-4)
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", f"--out={tmp_path / 's'}", f"--task={WAVENET}",
                        "--task_args={'n_embdd': 4}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"lrscan study: error: task='{WAVENET}': make(seed, **task_args)")
    assert not (tmp_path / "s").exists()


def test_a_missing_word_list_is_one_line_before_any_point_from_any_folder(tmp_path):
    """Run from an empty folder: a word list that is not there stops the study before stage 1, saying how to give
    one in words that work outside the repository (no `make data`)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "LRSCAN_DATA": str(tmp_path / "nowhere" / "names.txt"), "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", "--out=s"], cwd=empty, env=env,
                       capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"lrscan study: error: data file '{tmp_path / 'nowhere' / 'names.txt'}' does not "
                               f"exist")
    assert "make data" not in p.stderr
    assert list(empty.iterdir()) == []  # no study folder, no point launched, no wandb folder
    # a word list that is there but not one is found as early
    (tmp_path / "bad.txt").write_text("")
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", "--out=s"], cwd=empty, capture_output=True,
                       text=True,
                       env={**env, "LRSCAN_DATA": str(tmp_path / "bad.txt")}, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "is empty" in p.stderr, p.stderr
    assert list(empty.iterdir()) == []
