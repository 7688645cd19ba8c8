"""One training run: a TrainConfig in (the makemore MLP, or any model as a Task), every step logged, a summary out.

    python -m pipeline.train --schedule=range --lre_min=-3 --lre_max=0 --steps=1000
    python -m pipeline.train --task=path/to/file.py:make --task_args="{'width': 64}"
    from lrscan.pipeline.train import train; train(TrainConfig(...)); train(TrainConfig(...), task=Task(...))
"""

from lrscan.pipeline.train.loop import train
from lrscan.pipeline.train.task import Task, load_task

__all__ = ["Task", "load_task", "train"]
