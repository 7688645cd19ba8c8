"""One training run: a TrainConfig in, every step logged to one wandb run, a summary out.

    python -m pipeline.train --schedule=range --lre_min=-3 --lre_max=0 --steps=1000
    from pipeline.train import train; train(TrainConfig(...))
"""

from pipeline.train.loop import train

__all__ = ["train"]
