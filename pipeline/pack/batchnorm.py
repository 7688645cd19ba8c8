"""Training-mode batch norm inside a pack's vmapped loss, laid out so that torch's vmap rule hits the fast kernel.

    with channels_last_batch_norm():           # around vmap(grad_and_value(loss)) only (functional.py)
        grads, losses = vmapped(params, consts, batch)

Why: under vmap, torch's rule for batch norm with per-member weights and running statistics folds the
K members into the channels, one (B, K*C, *rest) call of the kernel for all members. On the CPU that
kernel is slow when the channels are not the last, contiguous dim and *rest is short (wavenet's
(B, C, T=4): its backward ~15x slower than on a (B*T, K*C) input), and the rule's affine part adds a
second kernel call; together ~45% of a wavenet pack's forward and backward. So each member's
training-mode `F.batch_norm(x, ...)` (any BatchNorm module or subclass: they all call it) becomes
one on x's (B*rest, C) rows, channels last, without its affine part, then `y * weight + bias`:
the rule's fold gives a (B*rest, K*C) input, which the kernel's channels-last path normalizes (and
backpropagates) several times faster, and the affine part is two plain batched ops.

Exact: the statistics are over the same values (every dim but the channels), the running mean and
var are updated in place by the same kernel with the module's own momentum (the module itself
increments num_batches_tracked), and everything is torch's own ops and vmap and autograd rules (a
double backward too), so a member's numbers equal its run alone's within float rounding (tested
within rtol 1e-5). Eval mode (the running statistics read, not updated) is left as it is.

An autograd.Function whose vmap staticmethod calls the kernel once on the folded input was tried:
its kernels were as fast, but functorch's per-call Python work for a custom Function under
vmap(grad) (~1 ms each, 6 per wavenet step) made the step slower than torch's own rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


@contextmanager
def channels_last_batch_norm() -> Iterator[None]:
    """Every training-mode F.batch_norm in the block as `batch_norm_channels_last` (meant around a vmapped loss)."""
    with _ChannelsLast():
        yield


class _ChannelsLast(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            x, running_mean, running_var, weight, bias, training, momentum, eps = _batch_norm_args(*args, **kwargs)
            if training:  # eval mode reads the running statistics: nothing to gain
                return batch_norm_channels_last(x, running_mean, running_var, weight, bias, momentum, eps)
        return func(*args, **kwargs)


def _batch_norm_args(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                     eps=1e-5):
    # F.batch_norm's signature: its arguments in order (inspect's bind costs more than the rest of the call)
    return input, running_mean, running_var, weight, bias, training, momentum, eps


def batch_norm_channels_last(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                             weight: torch.Tensor | None, bias: torch.Tensor | None, momentum: float | None,
                             eps: float) -> torch.Tensor:
    """F.batch_norm(x, ..., training=True) of x (B, C, *rest) computed on its (B*rest, C) rows, affine apart."""
    last = x.movedim(1, -1)  # (B, *rest, C)
    rows = last.reshape(-1, x.shape[1])  # (B*rest, C)
    # the statistics, their running averages (in place) and the normalized rows: torch's kernel and vmap rule
    y = F.batch_norm(rows, running_mean, running_var, None, None, True, momentum, eps)  # (B*rest, C)
    if weight is not None:
        y = y * weight if bias is None else torch.addcmul(bias, y, weight)
    elif bias is not None:
        y = y + bias
    return y.view(last.shape).movedim(-1, 1)  # (B, C, *rest)
