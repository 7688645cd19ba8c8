"""What produces runs: the contract both halves share (config, keys, errors, files, the .wandb reader), the rooms above.

    pipeline/config.py keys.py errors.py fsutil.py runlog.py   the contract, imported by analysis too
    pipeline/train/   one run          python -m pipeline.train
    pipeline/sweep/   many runs        python -m pipeline.sweep
    pipeline/study/   the whole study  python -m pipeline.study (the only room that also imports analysis)

The Python API on your own model, loaded on first use so that `import pipeline` (which the analysis
does for the contract) never pulls in torch:

    from lrscan.pipeline import Task, prove, range_test
"""

from __future__ import annotations

from typing import Any

__all__ = ["Proof", "RangeTestResult", "Task", "prove", "range_test"]


def __getattr__(name: str) -> Any:
    # PEP 562: the heavy rooms are imported when a name is first asked for, not with the package
    if name == "Task":
        from lrscan.pipeline.train.task import Task

        return Task
    if name in ("range_test", "RangeTestResult"):
        from lrscan.pipeline.study.range_test import RangeTestResult, range_test

        return range_test if name == "range_test" else RangeTestResult
    if name in ("prove", "Proof"):
        from lrscan.pipeline.study.prove_api import Proof, prove

        return prove if name == "prove" else Proof
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
