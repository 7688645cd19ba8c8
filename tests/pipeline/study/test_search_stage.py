"""The study's search stage, run as a user runs it: killed mid-search and resumed, its summary and report, --zoom."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import wandb

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.search_plan import BUDGET, TIED, TOLD_WORSE, WON
from tests.conftest import REPO, make_words

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

STUDY_CODE = ("import sys; from pathlib import Path; from tests.pipeline.study.test_study import tiny_study; "
              "s = tiny_study(Path(sys.argv[1]), prove=True, prove_seeds=2); s.run()")


def test_a_study_killed_in_the_search_resumes_and_says_what_it_chose_and_why(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(make_words()) + "\n")
    out = tmp_path / "study"
    wandb.setup()  # the caller's own wandb service must not hold the search's runs
    env = {**os.environ, "LRSCAN_DATA": str(words), "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    argv = [sys.executable, "-c", STUDY_CODE, str(out)]
    first = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if "] search:" in line:
            break
    assert "[3/3] search:" in "".join(seen), "".join(seen)[-3000:]
    # killed once a rung has been judged and the next one trains: the runs judged there have moved on since, and the
    # resumed study must judge that rung again by what it saw then
    deadline = time.monotonic() + 180
    while len(list((out / "sweeps").glob("search-*/rungs/rung*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the study and its packs, mid-rung
    first.wait(timeout=60)
    first.stdout.close()
    state = json.loads((out / "state.json").read_text())

    second = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1100)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert json.loads((out / "state.json").read_text())["prove_candidates"] == state["prove_candidates"]
    summary = json.loads((out / "report" / "summary.json").read_text())
    search = summary["search"]
    assert summary["chosen_by"] == "search" and summary["horizon"] == 400 and "largest peak lr" in summary["rule"]
    assert search["spent_run_steps"] <= search["budget_run_steps"]
    statuses = {c["name"]: c["status"] for c in search["candidates"]}
    assert list(statuses.values()).count(WON) == 1 and set(statuses.values()) <= {WON, TIED, TOLD_WORSE, BUDGET}
    won = next(c for c in search["candidates"] if c["status"] == WON)
    assert won["lr"] == summary["chosen_lr"] and won["reached_step"] == 400 and len(won["losses"]) == 2
    assert summary["schedule"]["at"] == [b for b, _ in won["decay"]]
    # the user's lrs and every suggester's are candidates, each pair of the decay grid's options
    n_lrs = len({c["lr"] for c in search["candidates"]})
    assert len(search["candidates"]) == 2 * n_lrs and n_lrs >= len(state["prove_candidates"])
    # the same as the study never killed: every pair's status and losses, the choice
    whole = subprocess.run([sys.executable, "-c", STUDY_CODE, str(tmp_path / "whole")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=1100)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    uninterrupted = json.loads((tmp_path / "whole" / "report" / "summary.json").read_text())["search"]
    assert [(c["name"], c["status"], c["reached_step"], c["losses"]) for c in search["candidates"]] == \
        [(c["name"], c["status"], c["reached_step"], c["losses"]) for c in uninterrupted["candidates"]]
    # the constant runs of the first rung were judged by probes (each decayed there for an eighth of the rung), read
    # again as first seen by the resumed study
    assert search["probes"] == uninterrupted["probes"] and search["probes"]
    first_rung = min(p["step"] for p in search["probes"])
    assert {p["steps"] for p in search["probes"] if p["step"] == first_rung} == {first_rung // 8}
    assert all(len(p["losses"]) == 2 and p["step"] < 400 for p in search["probes"])
    report = (out / "report" / "report.md").read_text()
    assert "judged by probes" in report and f"- step {first_rung}, each constant run decayed" in report
    assert report.startswith("The search proved lr") and "## Search: peak lr x decay" in report
    assert "Step-decay grid" not in report and "Best config" not in report
    assert (out / "report" / "prove_range_candidates.png").is_file()
    assert not (out / "report" / "decay").exists()  # no decay grid was trained beside the search


def test_zoom_searches_the_zoomed_candidates_and_shows_the_zoomed_pick(tmp_path, monkeypatch):
    from tests.pipeline.study.test_study import tiny_study

    words = tmp_path / "words.txt"
    words.write_text("\n".join(make_words()) + "\n")
    monkeypatch.setenv("LRSCAN_DATA", str(words))
    with pytest.raises(LrscanError, match="--zoom proves"):
        tiny_study(tmp_path / "x", prove=False, zoom=True)
    out = tmp_path / "study"
    summary = tiny_study(out, prove=True, zoom=True, prove_seeds=1, prove_lrs=(0.05,)).run()
    zoomed = json.loads((out / "report" / "zoom" / "summary.json").read_text())
    assert summary["zoomed"] and summary["best_lre"] == pytest.approx(zoomed["best_lre"])
    lrs = {c["lr"] for c in summary["search"]["candidates"]}
    assert 0.05 in lrs and any(abs(lr - 10 ** zoomed["best_lre"]) < 1e-9 for lr in lrs)
    assert "(the zoomed range test)" in (out / "report" / "report.md").read_text()


def test_the_first_rung_with_its_probes_and_the_cheapest_way_on_fits_the_budget():
    from lrscan.pipeline.study import search_plan as plan
    from lrscan.pipeline.study.search_stage import _first_rung_cost

    # --size=full: 5 lrs x 6 decay options x 3 seeds to 200k steps, a 2 000 004-run-step budget. A first rung at 25k
    # (5 x 3 x (25 000 + 3 125) run-steps) then one constant run on the cheapest fair way fits; 50k does not
    decays = [((b, f),) for b in (50000, 100000, 150000) for f in (0.1, 0.01)]
    pairs = plan.make_pairs([{"lr": lr, "suggested_by": "x"} for lr in (0.01023, 0.0195, 0.1023, 0.1349, 0.2698)],
                            decays)
    lengths = plan.rung_lengths(pairs, 200000)
    assert _first_rung_cost(pairs, 25000, lengths, 3) == 5 * 3 * 28125 + plan.fair_cost(
        {(0.2698, ())}, pairs, 25000, [25000, *lengths], 3) <= 2000004
    assert _first_rung_cost(pairs, 50000, lengths, 3) > 2000004
    # one lr more past the edge after the rung's probes: its run and probe, then the same way on
    assert _first_rung_cost(pairs, 25000, lengths, 3, n_lrs=1) == 3 * 28125 + plan.fair_cost(
        {(0.2698, ())}, pairs, 25000, [25000, *lengths], 3)
