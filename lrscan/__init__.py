"""lrscan: find a good learning rate, and prove it, with Weights & Biases. The one name lrscan installs.

    import lrscan
    result = lrscan.range_test(make, seeds=[1, 2, 3])     # every step logged to W&B (offline by default)
    proof = result.prove(steps=2000)                      # the suggestions trained against each other

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
    "Task": "lrscan.pipeline.train.task",
    "range_test": "lrscan.pipeline.study.range_test",
    "RangeTestResult": "lrscan.pipeline.study.range_test",
    "prove": "lrscan.pipeline.study.prove_api",
    "Proof": "lrscan.pipeline.study.prove_api",
    "LrscanError": "lrscan.pipeline.errors",
    "load_runs": "lrscan.analysis.sources",
    "pick_exponent": "lrscan.analysis.pick",
    "write_report": "lrscan.analysis.report",
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
