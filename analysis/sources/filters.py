"""Which runs the caller asked for (group, sweep, tags, state, job type), offline and on the cloud; which were left out.

By default every run is read except lrscan's own analysis runs (job type `analysis`): most W&B users
never set a job type. A job type filter `"!x"` keeps every run whose job type is not x.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lrscan.pipeline import keys as K
from lrscan.pipeline.runlog import RunFile

NOT = "!"
ALL_BUT_ANALYSIS = NOT + K.JOB_ANALYSIS   # the default job type filter


@dataclass(frozen=True)
class Filters:
    group: str | None
    sweep: str | None
    tags: tuple[str, ...]
    states: tuple[str, ...] | None
    job_type: str | None    # None: any; "x": only x; "!x": any but x

    def left_out_by(self, run: RunFile) -> str | None:
        """The first filter that leaves `run` out, as `describe` writes it, or None when it passes them all."""
        if self.group is not None and run.group != self.group:
            return f"group={self.group!r}"
        if self.sweep is not None and self.sweep not in (run.sweep_id, run.group):
            return f"sweep={self.sweep!r}"
        if not set(self.tags) <= set(run.tags):
            return f"tags={list(self.tags)!r}"
        if self.job_type is not None and not _job_type_ok(self.job_type, run.job_type):
            return _job_type_text(self.job_type)
        if self.states is not None and run.state not in self.states:
            return f"state={self.states!r}"
        return None

    def ok(self, run: RunFile) -> bool:
        return self.left_out_by(run) is None

    def describe(self) -> str:
        parts = [f"{name}={value!r}" for name, value in (("group", self.group), ("sweep", self.sweep),
                 ("tags", list(self.tags) or None), ("state", self.states)) if value]
        if self.job_type is not None:
            parts.append(_job_type_text(self.job_type))
        return ", ".join(parts) if parts else "(no filters)"

    def cloud_filters(self) -> dict[str, Any]:
        """The same filters in the Public API's MongoDB-style language (rechecked on each run).

        A negated job type is checked here only: the server's `$ne` may leave out the runs without
        a job type (most runs), which are the ones it must keep.
        """
        clauses: list[dict[str, Any]] = []
        if self.group is not None:
            clauses.append({"group": self.group})
        if self.sweep is not None:
            clauses.append({"$or": [{"sweep": self.sweep}, {"group": self.sweep}]})
        clauses.extend({"tags": tag} for tag in self.tags)
        if self.states is not None:
            clauses.append({"state": {"$in": list(self.states)}})
        if self.job_type is not None and not self.job_type.startswith(NOT):
            clauses.append({"jobType": self.job_type})
        return {"$and": clauses} if clauses else {}


@dataclass
class LeftOut:
    """Counts the runs the filters left out, by filter, to say so in one line."""

    filters: Filters
    seen: int = 0
    by_filter: Counter = field(default_factory=Counter)
    job_types: Counter = field(default_factory=Counter)   # of the runs left out by job type

    def keep(self, run: RunFile) -> bool:
        self.seen += 1
        why = self.filters.left_out_by(run)
        if why is not None:
            self.by_filter[why] += 1
            if why.startswith("job_type"):
                self.job_types[run.job_type] += 1
        return why is None

    def note(self) -> str | None:
        """e.g. "left out 3 of 5 runs: 2 by job_type='train' (their job types: '' x2), 1 by group='A'"."""
        if not self.by_filter:
            return None
        parts = []
        for why, n in self.by_filter.most_common():
            if why.startswith("job_type"):
                types = ", ".join(f"{t!r} x{c}" for t, c in self.job_types.most_common(3))
                why += f" (their job types: {types})"
            parts.append(f"{n} by {why}")
        return f"left out {sum(self.by_filter.values())} of {self.seen} runs: {', '.join(parts)}"


def _job_type_ok(wanted: str, job_type: str) -> bool:
    return job_type != wanted[len(NOT):] if wanted.startswith(NOT) else job_type == wanted


def _job_type_text(wanted: str) -> str:
    return f"job_type!={wanted[len(NOT):]!r}" if wanted.startswith(NOT) else f"job_type={wanted!r}"
