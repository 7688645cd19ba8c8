"""Packed sweeps: many sweep points of the makemore MLP trained stacked in one process, each its own W&B run.

    python -m pipeline.pack POINTS.json
    from pipeline.pack import train_pack
"""

from pipeline.pack.loop import train_pack

__all__ = ["train_pack"]
