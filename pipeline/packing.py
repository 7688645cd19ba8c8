"""Which sweep points can train stacked in one process (a pack): `pack_key`, shared by the runner and the pack trainer.

A pack trains K makemore MLPs with one batched step (`pipeline.pack`), or K copies of a user task's
model with one vmapped step (`pipeline.pack.functional`), so its members must do the
same work step for step: the same task, data and model shapes, the same number of steps, the same
schedule kind, stops, evaluation, checkpoints and device. What may differ between packmates is what
the batched step takes per member (`PACKABLE`): the seed (each member's init and its own batches),
the range test's lre_min/lre_max, the base lr, and the decay steps and lrs. Each member is its own
W&B run, so where its run lives may differ too (`PER_RUN`). Anything else gives another key.

This module is part of the contract: `pipeline.sweep` groups points with it without importing the
trainer, and `pipeline.pack` refuses points whose keys differ.
"""

from __future__ import annotations

import json

from lrscan.pipeline.config import TrainConfig

# what the batched step takes per member
PACKABLE = ("seed", "lre_min", "lre_max", "lr", "decay_steps", "decay_lrs")
# where each member's own run lives, and whether it continues from its checkpoint
PER_RUN = ("run_id", "wandb_name", "wandb_tags", "wandb_group", "wandb_job_type", "wandb_project", "wandb_entity",
           "resume")


def pack_key(cfg: TrainConfig) -> str:
    """Points with equal keys can share a pack; a key is a plain string (JSON of the shared fields)."""
    shared = {k: v for k, v in cfg.to_dict().items() if k not in PACKABLE and k not in PER_RUN}
    return json.dumps(shared, sort_keys=True, default=str)


def key_difference(a: TrainConfig, b: TrainConfig) -> list[str]:
    """The fields that keep two points out of one pack (empty when they can share one)."""
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in da if k not in PACKABLE and k not in PER_RUN and da[k] != db.get(k))


# `python -m pipeline.pack WHY_NOT_FLAG <trainer flags>` prints why a task's points cannot share a pack
# ('' when they can): the runner asks in a process, so it never imports the pack room (nor torch)
WHY_NOT_FLAG = "--why-not-packed"
TASK_CHECK_SECONDS = 300.0  # building a user's task once to check it: its make() may load data
