"""Packed sweeps: many sweep points trained stacked in one process, each its own W&B run.

The makemore MLP through its hand-written step batched over the members (stacked_mlp.py); a task
whose copies torch.func can step exactly (plain SGD, batch(step), no buffers or randomness) through
vmap (functional.py); anything else is not packed and runs one process per point. Either way the
training is the single run's loop (pipeline/train/loop.py) driving K members through a stepper.

    python -m pipeline.pack POINTS.json
    from lrscan.pipeline.pack import train_pack
"""

from lrscan.pipeline.pack.loop import train_pack

__all__ = ["train_pack"]
