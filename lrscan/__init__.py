"""lrscan: find a good learning rate, and prove it, with Weights & Biases. The one name lrscan installs.

    import lrscan
    found = lrscan.find(make, horizon=2000)    # make(seed) -> lrscan.Task; range test over seeds, then the proof
    print(found); found.plot(); found.apply(optimizer)

The API (each name has its own reference):

- `find`, `FindResult`: one call from a model to a proven lr (range test over seeds, then the proof).
- `Task`: your model, optimizer, batches and loss, as every lrscan route trains them.
- `range_test`, `RangeTestResult`: the lr range test on your model, over seeds, with the pick's CI;
  `result.suggest_range()` when the range missed the minimum or the turn.
- `prove`, `Proof`: candidate lrs trained against each other on paired seeds; `proof.apply(optimizer)`.
- `task_from_lightning`, `task_from_hf_trainer`: a `Task` from a LightningModule or an HF `Trainer`.
- `apply_lr`: a found lr set where you set yours (an optimizer, a LightningModule's hparams, TrainingArguments).
- `default_range`: the range's ends for an optimizer's family (SGD-like 1e-3..1, Adam-like 1e-5..1e-1).
- `load_runs`, `pick_exponent`, `ExponentPick`, `write_report`, `Report`: read W&B runs (lrscan's or your
  own code's), pick the exponent with a CI across seeds, write the report.
- `shipped_sweeps`, `sweep_path`, `export_sweep`: the sweep YAMLs lrscan ships, by name.
- `LrscanError`: every refusal of bad input, one line naming the cause.

The code lives in two rooms, imported as `lrscan.pipeline` (what produces runs: train, sweep, pack, study)
and `lrscan.analysis` (what reads them). A wheel installs them inside this package; in a checkout they stand
beside it as pipeline/ and analysis/ (the repository's layout), and this package's path reaches them there,
so `python -m pipeline.train` and `python -m analysis` keep working in a checkout. Nothing else is installed at
the top level: a user's own pipeline.py or analysis.py, or another distribution's `pipeline`, is never shadowed.
Names are loaded on first use (PEP 562), so `import lrscan` pulls in neither torch nor wandb.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# a checkout: pipeline/ and analysis/ stand beside lrscan/ (an installed wheel holds them inside it)
_here = Path(__file__).resolve().parent
if not (_here / "pipeline").is_dir() and (_here.parent / "pipeline" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (a package's __path__)

_EXPORTS = {
    "find": "lrscan.lrfind",
    "FindResult": "lrscan.lrfind",
    "Task": "lrscan.pipeline.train.task",
    "range_test": "lrscan.pipeline.study.range_test",
    "RangeTestResult": "lrscan.pipeline.study.range_test",
    "prove": "lrscan.pipeline.study.prove_api",
    "Proof": "lrscan.pipeline.study.prove_api",
    "default_range": "lrscan.pipeline.study.ranges",
    "LrscanError": "lrscan.pipeline.errors",
    "load_runs": "lrscan.analysis.sources",
    "pick_exponent": "lrscan.analysis.pick",
    "ExponentPick": "lrscan.analysis.pick",
    "write_report": "lrscan.analysis.report",
    "Report": "lrscan.analysis.report",
    "shipped_sweeps": "lrscan.catalog",
    "sweep_path": "lrscan.catalog",
    "export_sweep": "lrscan.catalog",
    "task_from_lightning": "lrscan.pipeline.train.lightning",
    "task_from_hf_trainer": "lrscan.pipeline.train.huggingface",
    "apply_lr": "lrscan.pipeline.train.apply",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lrscan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
