"""The default task's training: the makemore MLP on the word list, with the hand-written fast step.

One chunk of steps at a time: the chunk's batches are drawn at once and its losses come back at once,
so the per-step work is tensor ops only (the speed that makes logging every step affordable). On the
CPU the step is NumPy's (pipeline/train/numpy_step.py, ~1.7x faster there), on CUDA torch's. The
loop (pipeline/train/loop.py) drives this, a stepper of one member (pipeline/train/stepper.py), as it
drives `generic.TaskRun` for any other task and the packs' steppers.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.data import Splits, batch_indices
from lrscan.pipeline.train.model import MLP, NonFiniteModel, SGDStep, param_shapes
from lrscan.pipeline.train.numpy_step import NumpySGDStep, alphas, batch_mean, numpy_steps
from lrscan.pipeline.train.stepper import report_line


def losses_text(summary: dict) -> str:
    """The losses a makemore run ended with, as its report line says them (a run paused at a step has its dev loss
    only: pipeline/train/loop.py)."""
    return "  ".join(f"{name} {summary[key]:.4f}" for name, key in
                     (("train", keys.TRAIN_LOSS), ("dev", keys.DEV_LOSS), ("test", keys.TEST_LOSS)) if key in summary)

def check_model_fits(cfg: TrainConfig, vocab_size: int, members: int = 1) -> None:
    """Parameters and gradients of `members` models, float32: a size that cannot fit fails here, before any run
    exists (members > 1: a pack's stack)."""
    n_params = sum(math.prod(s) for s in param_shapes(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden).values())
    need = 2 * 4 * n_params * members
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        pack = (f"a pack of {members} with ", "; use a smaller --pack") if members > 1 else ("", "")
        raise LrscanError(f"{pack[0]}n_embd={cfg.n_embd}, n_hidden={cfg.n_hidden}: {n_params:.3g} parameters each "
                          f"need {need / 2**30:.3g} GiB, more than this machine's memory ({have / 2**30:.3g} GiB)"
                          f"{pack[1]}")


class MakemoreRun:
    """The makemore MLP of `cfg`, its data and its hand-written SGD step (NumPy's on the CPU, torch's on CUDA)."""

    def __init__(self, cfg: TrainConfig, splits: Splits, device: torch.device):
        self.cfg, self.splits, self.device = cfg, splits, device
        self.vocab_size = len(splits.vocab)
        try:
            self.model = MLP.create(self.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden, seed=cfg.seed,
                                    init=cfg.init, device=device)
        except RuntimeError as e:  # typically an allocation that cannot succeed
            raise LrscanError(f"cannot build the model (n_embd={cfg.n_embd}, n_hidden={cfg.n_hidden}): "
                              f"{str(e).splitlines()[0]}") from None
        self.step_fn = SGDStep(self.model) if device.type != "cpu" else None
        self.numpy_step = NumpySGDStep(self.model, cfg.batch_size) if device.type == "cpu" else None
        self.Xtr, self.Ytr = (t.to(device) for t in splits.train)
        self.n_params = self.model.n_params
        self._batches: list = []
        self._chunk_start: torch.Tensor | None = None

    def describe(self) -> str:
        n = self.splits.n_words
        return f"{self.n_params} parameters, {n[0]}/{n[1]}/{n[2]} words train/dev/test, device {self.device}"

    def train_chunk(self, starts: list[int], lrs: np.ndarray, rewindable: bool) -> np.ndarray:
        """Train steps [starts[0], starts[0] + n) with lrs (n, 1); their losses (n, 1) float64 (stepper.py)."""
        n, step = len(lrs), starts[0]
        ix = batch_indices(self.cfg.seed, step, n, self.Xtr.shape[0], self.cfg.batch_size).to(self.device)  # (n, B)
        Xc, Yc = self.Xtr[ix], self.Ytr[ix]                                   # (n, B, block_size), (n, B)
        self._chunk_start = self.model.flat.clone() if rewindable else None
        if self.numpy_step is None:
            # unbind: the per-step views in one call each, cheaper than indexing every step
            self._batches = list(zip(Xc.view(n, -1).unbind(0), Yc.unbind(0), lrs[:, 0].tolist()))
            return torch.stack([self.step_fn(*batch) for batch in self._batches]).double().cpu().numpy()[:, None]
        # NumPy's step: a stack of one (K = 1), each step's rows views of the chunk's arrays
        self._batches = list(zip(Xc.view(n, 1, -1).numpy(), Yc.view(n, 1, -1).numpy(),
                                 alphas(lrs, self.cfg.batch_size)))                # (1, B * T), (1, B), (1, 1)
        nll = np.empty((n, 1, self.cfg.batch_size), np.float32)                     # (n, 1, B): each example's loss
        numpy_steps(self.numpy_step, self._batches, nll)
        return batch_mean(nll).astype(np.float64)                                    # (n, 1)

    def replay(self, kept: dict[int, int]) -> None:
        """Back to the start of the last chunk, then its first kept[0] steps again (same batches and lrs, in order):
        the weights are those right after its stop step, bit for bit on the CPU."""
        self.model.flat.copy_(self._chunk_start)
        batches = self._batches[:kept[0]]
        if self.numpy_step is None:
            torch.stack([self.step_fn(*batch) for batch in batches]).cpu()  # .cpu(): wait for the device
        else:
            numpy_steps(self.numpy_step, batches, np.empty((len(batches), 1, self.cfg.batch_size), np.float32))

    def keep(self, rows: list[int]) -> MakemoreRun:
        return self  # one member: it goes on, or the loop ends

    def evaluate(self, k: int = 0) -> dict[str, float]:
        """What an eval step logs: the full dev loss."""
        return {keys.DEV_LOSS: self.model.loss(*(t.to(self.device) for t in self.splits.dev))}

    def final_losses(self, ks: list[int]) -> dict[int, dict[str, float]]:
        return {0: {key: self.model.loss(X.to(self.device), Y.to(self.device)) for key, (X, Y) in
                    ((keys.TRAIN_LOSS, self.splits.train), (keys.DEV_LOSS, self.splits.dev),
                     (keys.TEST_LOSS, self.splits.test))}}

    def state(self, k: int = 0) -> dict:
        return {"flat": self.model.flat.detach().cpu()}

    def load(self, state: dict, run_id: str) -> None:
        self.model.flat.copy_(state["flat"].to(self.device))

    def report(self, k: int, run_id: str, summary: dict, tail: str, samples: bool = True) -> None:
        print(report_line(run_id, losses_text(summary), tail))
        if self.cfg.samples and samples:
            g = torch.Generator().manual_seed(self.cfg.seed + 10)
            try:
                names = ["".join(self.splits.vocab.itos[i] for i in w) for w in self.model.sample(self.cfg.samples, g)]
                print("samples: " + ", ".join(names))
            except NonFiniteModel as e:  # a diverged run is a normal outcome: its summary stands, it has no names
                print(f"samples: none, the model diverged ({e})")
