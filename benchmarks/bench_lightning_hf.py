"""lrscan's range test against Lightning's lr_find on the same module, and the regret of lr_find's suggestion.

    python benchmarks/bench_lightning_hf.py [--steps 100] [--horizon 300] [--seeds 3] [--data data/names.txt]

Two small models on the names' context windows (makemore: 3 characters -> the next):
  lightning  a LightningModule (embedding + tanh MLP, AdamW with weight decay on the matrices) and a
             LightningDataModule
  hf         a 1-layer GPT-2 (transformers, random init) trained by an HF Trainer (its own AdamW and
             weight-decay groups), next-character loss over each 4-character window; Lightning's lr_find
             runs on the same model wrapped in a LightningModule, as HF users reach for it
For each, side by side in one process, on one thread:
  1. Lightning's `Tuner.lr_find` (num_training=steps, min_lr 1e-5 .. max_lr 1, exponential, nothing
     logged) and lrscan's `range_test` on the same module object over the same range and steps, every
     step logged to W&B offline: the time ratio lr_find / lrscan (the module is put back by both);
  2. lrscan's range test over `--seeds` seeds (the factory form) and its prove stage at `--horizon`
     steps, with lr_find's suggestion as one more candidate: the regret of lr_find's suggestion is its
     mean held-out loss after `horizon` steps minus that of lrscan's proven lr (the best of lrscan's own
     candidates, paired seeds; negative when lr_find's suggestion trained better).
The lrscan side is timed twice: as measured (every step logged to W&B offline, the logger process and
wandb service started and closed inside the call) and with W&B disabled (the training alone).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_lightning.tuner import Tuner  # noqa: E402
from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import lrscan  # noqa: E402
from lrscan.pipeline.config import default_data_path  # noqa: E402
from lrscan.pipeline.train.data import load_splits  # noqa: E402

BLOCK, BATCH, DEV_ROWS = 3, 32, 4000


def splits(data: str):
    s = load_splits(data, BLOCK, 42)
    return len(s.vocab), s.train, (s.dev[0][:DEV_ROWS], s.dev[1][:DEV_ROWS])


# -- the Lightning model -----------------------------------------------------------------------------------------


class CharMLP(pl.LightningModule):
    def __init__(self, vocab: int, lr: float = 1e-3, weight_decay: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Embedding(vocab, 16), torch.nn.Flatten(),
                                       torch.nn.Linear(16 * BLOCK, 128), torch.nn.Tanh(), torch.nn.Linear(128, vocab))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        decay = [p for p in self.parameters() if p.ndim >= 2]
        rest = [p for p in self.parameters() if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=self.hparams.lr)


class Windows(pl.LightningDataModule):
    def __init__(self, data: str):
        super().__init__()
        self.data = data

    def setup(self, stage):
        self.vocab, self.train, self.dev = splits(self.data)

    def train_dataloader(self):
        return DataLoader(TensorDataset(*self.train), batch_size=BATCH, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*self.dev), batch_size=1000)


# -- the HF model --------------------------------------------------------------------------------------------------


class WindowTokens(torch.utils.data.Dataset):
    """Each context window and its next character as a 4-token sequence, the LM's labels the same tokens."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.ids = torch.cat([x, y[:, None]], dim=1)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def gpt2(vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=vocab, n_positions=BLOCK + 1,
                                      bos_token_id=0, eos_token_id=0))


def hf_trainer(data: str, seed: int, out: str):
    from transformers import Trainer, TrainingArguments

    vocab, train, dev = splits(data)
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, per_device_eval_batch_size=1000,
                             learning_rate=5e-4, weight_decay=0.01, report_to=[], use_cpu=True, disable_tqdm=True,
                             save_strategy="no", seed=seed)
    return Trainer(model=gpt2(vocab), args=args, train_dataset=WindowTokens(*train), eval_dataset=WindowTokens(*dev))


class Wrapped(pl.LightningModule):
    """The HF model as a LightningModule, with the Trainer's optimizer (AdamW, decay off biases and norms)."""

    def __init__(self, model, weight_decay: float = 0.01, lr: float = 5e-4):
        super().__init__()
        self.model, self.weight_decay, self.lr = model, weight_decay, lr

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def configure_optimizers(self):
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if "bias" not in n and "ln" not in n]
        rest = [p for n, p in named if "bias" in n or "ln" in n]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=self.lr)


# -- the comparison ------------------------------------------------------------------------------------------------


def lr_find(module, steps: int, **data) -> tuple[float, float]:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, max_epochs=100,
                         default_root_dir=scratch_dir("lrscan-bench-pl-"))
    t0 = time.perf_counter()
    finder = Tuner(trainer).lr_find(module, min_lr=1e-5, max_lr=1.0, num_training=steps, update_attr=False, **data)
    return time.perf_counter() - t0, float(finder.suggestion())


def compare(name: str, task, module, make_task, steps: int, horizon: int, seeds: list[int], **data) -> dict:
    pl_seconds, suggested = lr_find(module, steps, **data)
    t0 = time.perf_counter()
    result = lrscan.range_test(task, steps=steps, lre_min=-5, lre_max=0, wandb_mode="offline")
    ours_seconds = time.perf_counter() - t0
    logged = len(result.steps)
    t0 = time.perf_counter()
    lrscan.range_test(task, steps=steps, lre_min=-5, lre_max=0, wandb_mode="disabled")
    unlogged_seconds = time.perf_counter() - t0
    seeded = lrscan.range_test(make_task, steps=steps, lre_min=-5, lre_max=0, seeds=seeds, wandb_mode="offline")
    proof = seeded.prove(horizon=horizon, seeds=seeds, lrs=[suggested], wandb_mode="offline")
    print(proof)
    table = proof.table
    is_theirs = (table["lr"] - suggested).abs() <= 1e-9 * suggested
    theirs = table.loc[is_theirs, "mean"]
    ours = table.loc[~is_theirs].sort_values("mean").iloc[0]  # lrscan's proven lr: the best of its own candidates
    best = float(ours["mean"])
    row = {"model": name, "lr_find s": pl_seconds, "lrscan range test s (W&B offline)": ours_seconds,
           "ratio lr_find / lrscan": f"{pl_seconds / ours_seconds:.2f}x",
           "lrscan s (W&B disabled)": unlogged_seconds, "steps logged (lrscan)": logged,
           "lr_find suggestion": suggested, "lrscan proven lr": float(ours["lr"]),
           f"held-out loss at {horizon} steps (lr_find)": float(theirs.iloc[0]) if len(theirs) else float("nan"),
           f"held-out loss at {horizon} steps (lrscan)": best}
    row["regret of lr_find"] = row[f"held-out loss at {horizon} steps (lr_find)"] - best
    row["verdict"] = proof.decision.verdict()
    print(row, flush=True)
    return row


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", default=None)
    parser.add_argument("--only", choices=["lightning", "hf"], default=None)
    a = parser.parse_args()
    data = a.data or str(default_data_path())
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_DIR", scratch_dir("lrscan-bench-wandb-"))
    os.environ.setdefault("WANDB_SILENT", "true")
    seeds = list(range(1, a.seeds + 1))
    rows = []

    if a.only in (None, "lightning"):
        def make(seed):
            return CharMLP(len(load_splits(data, BLOCK, 42).vocab)), Windows(data)

        module, dm = make(0)
        rows.append(compare("Lightning: char MLP (AdamW)", lrscan.task_from_lightning(module, datamodule=dm),
                            module, lrscan.task_from_lightning(make), a.steps, a.horizon, seeds, datamodule=dm))
    if a.only in (None, "hf"):
        out = scratch_dir("lrscan-bench-hf-")
        trainer = hf_trainer(data, 0, out)
        wrapped = Wrapped(trainer.model)
        loader = DataLoader(trainer.train_dataset, batch_size=BATCH, shuffle=True)
        rows.append(compare("HF Trainer: 1-layer GPT-2", lrscan.task_from_hf_trainer(trainer), wrapped,
                            lrscan.task_from_hf_trainer(lambda seed: hf_trainer(data, seed, out)),
                            a.steps, a.horizon, seeds, train_dataloaders=loader))
    record("lightning_hf", "lrscan on a LightningModule and an HF Trainer against Lightning's lr_find", rows,
           note=f"{a.steps} range-test steps on each side (1e-5 .. 1), one thread; regret: prove at {a.horizon} "
                f"steps over {len(seeds)} paired seeds, lr_find's suggestion one more candidate; "
                f"pytorch-lightning {pl.__version__}, transformers {_transformers_version()}")


if __name__ == "__main__":
    main()
