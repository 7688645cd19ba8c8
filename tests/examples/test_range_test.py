"""examples/range_test.ipynb run headless at its tiny size: every cell runs, figures inline, the runs exist."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "examples" / "range_test.ipynb"


def outputs_of(nb, tag: str) -> list[dict]:
    [cell] = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    return cell.outputs


def text_of(outputs: list[dict]) -> str:
    parts = [o.get("text", "") for o in outputs if o["output_type"] == "stream"]
    parts += [o["data"].get("text/plain", "") for o in outputs
              if o["output_type"] in ("execute_result", "display_data")]
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_notebook_runs_headless_at_its_tiny_size(tmp_path, monkeypatch, words_file):
    monkeypatch.setenv("LRSCAN_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("LRSCAN_DATA", str(words_file))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed without outputs
    # the kernel runs in an empty folder, with this test's environment (WANDB_DIR, offline W&B)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    assert "parameters" in nb.cells[1].metadata["tags"]
    range_text = text_of(outputs_of(nb, "range-test"))
    assert "range test: 3 run(s), seeds [1, 2, 3]" in range_text and "pick (min_loss" in range_text
    pick = outputs_of(nb, "pick")
    assert "min_loss (the pick)" in text_of(pick) and any("text/html" in o.get("data", {}) for o in pick)
    # the figures are inline PNGs: the range test's two, the proof's one
    for tag, count in (("figure", 1), ("prove", 1)):
        pngs = [o for o in outputs_of(nb, tag) if "image/png" in o.get("data", {})]
        assert len(pngs) >= count, tag
    runs_text = text_of(outputs_of(nb, "runs"))
    [ids] = re.findall(r"runs ([\w, -]+)\n", runs_text)
    run_ids = ids.split(", ")
    assert len(run_ids) == 3
    # every named run is a real offline W&B run in the kernel's W&B folder
    for run_id in run_ids:
        assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")), run_id
    assert "proof:      group" in runs_text and "optimizer lr set to" in runs_text
