"""The optimizer step a task pack applies to K members' stacked parameters: torch.optim.SGD's, Adam's and AdamW's.

    update = make_update(tasks, stepped)       # from each member's own optimizer (its groups, its state)
    update.step(params, grads, lrs)            # params, grads: name -> (K, ...); lrs: member k's schedule lr
    update.write_back(k, task)                 # member k's state into its own optimizer (checkpoint, eval, end)

Each member ends each step with the numbers its own optimizer would have given it alone, bit for bit
on the same gradients: the update is torch's single-tensor code (torch/optim/sgd.py, adam.py, which
the CPU runs by default) op for op on the stacked (K, ...) tensors, because an elementwise op on a
stack rounds each element as it does on one member's tensor. Where the scalar differs per member
(the lr, and Adam's bias corrections when members resumed at different steps), the op is either one
that rounds the same with a (K, 1, ...) tensor of float32 scalars (mul, div: one rounding each) or,
where torch's kernel fuses a multiply into an add (add_ with alpha, addcdiv_ with value: one
rounding where a tensor of scalars would give two), it is applied member by member with the member's
own Python scalar, as torch does.

Param groups: every member's groups hold the same parameter names with the same options; group g's
lr is the member's schedule lr times its scale (`pipeline.train.task.lr_scales`, the single run's rule).
A parameter whose gradient is None in the single run (unused in the loss, or frozen) is left alone,
as torch.optim leaves it: `stepped` names the others, found by a dry backward (functional.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lrscan.pipeline.train.task import Task, lr_scales, set_lr

# the state's entry for the lrs each member's last step applied (its groups' lrs in its checkpoint)
APPLIED = "(applied)"
# the options a pack's update implements; anything else in a group (a newer torch's flag) is refused by name
SGD_OPTIONS = {"momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach", "differentiable", "fused"}
ADAM_OPTIONS = {"betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable", "differentiable",
                "fused", "decoupled_weight_decay"}


def why_not_update(task: Task) -> str:
    """Why this task's optimizer cannot be stepped by a pack exactly as it steps itself ('' when it can)."""
    opt = task.optimizer
    kind = type(opt)
    if kind not in UPDATES:
        return (f"its optimizer is {kind.__name__}; a pack steps torch.optim.SGD, Adam and AdamW exactly, "
                f"and no other optimizer")
    if "step" in vars(opt) or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
        return (f"its {kind.__name__}'s step is wrapped or hooked (an lr scheduler built on it, or a hook); a pack "
                f"steps the parameters itself and would skip what the wrapper does")
    known = SGD_OPTIONS if kind is torch.optim.SGD else ADAM_OPTIONS
    for g, group in enumerate(opt.param_groups):
        other = sorted(set(group) - known - {"params", "lr", "initial_lr"})
        if other:
            return f"its {kind.__name__}'s param group {g} has option(s) {', '.join(other)} a pack does not implement"
        for flag, why in (("fused", "a fused kernel rounds its own way"),
                          ("differentiable", "a step autograd records, which a pack's step does not"),
                          ("capturable", "a step on tensors (CUDA graphs) whose arithmetic differs")):
            if group.get(flag):
                return f"its {kind.__name__} has {flag}=True ({why}); a pack steps as the default, {flag}=False"
        if isinstance(group.get("betas", (0.0, 0.0))[0], torch.Tensor):
            return f"its {kind.__name__} has tensor betas; a pack steps with float betas"
        if any(torch.is_complex(p) for p in group["params"]):
            return f"its {kind.__name__} steps complex parameters; a pack steps real ones"
    return ""


@dataclass(frozen=True)
class Group:
    """One param group of every member: its parameters' names, options, and lr as a multiple of group 0's."""

    names: tuple[str, ...]
    options: dict[str, Any]
    scale: float


def groups_of(tasks: list[Task], stepped: set[str], scales: list[float]) -> list[Group]:
    """Member 0's param groups by parameter name (the members' are checked equal by `why_not_members`)."""
    task = tasks[0]
    name_of = {id(p): n for n, p in task.model.named_parameters()}
    return [Group(tuple(name_of[id(p)] for p in g["params"] if name_of[id(p)] in stepped),
                  {k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")}, scale)
            for g, scale in zip(task.optimizer.param_groups, scales)]


def why_not_members(tasks: list[Task]) -> str:
    """Why these members' optimizers cannot share one stacked update ('' when they can): all alike but the lr."""
    first = tasks[0]
    names0 = _group_names(first)
    for t in tasks[1:]:
        if type(t.optimizer) is not type(first.optimizer) or _group_names(t) != names0 or \
                lr_scales(t.optimizer) != lr_scales(first.optimizer) or \
                [_options(g) for g in t.optimizer.param_groups] != [_options(g) for g in first.optimizer.param_groups]:
            return "its members' optimizers differ (kind, param groups, options or the groups' lr ratios)"
    return ""


def _group_names(task: Task) -> list[list[str]]:
    name_of = {id(p): n for n, p in task.model.named_parameters()}
    return [[name_of[id(p)] for p in g["params"]] for g in task.optimizer.param_groups]


def _options(group: dict) -> dict:
    return {k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")}


class StackedUpdate:
    """An optimizer's per-parameter state for K members, each tensor with a leading (K,) dimension.

    `state[name][key]`: e.g. state["0.weight"]["exp_avg"] of shape (K, *weight.shape); per-member scalars
    (a step count, whether a momentum buffer exists yet) are (K,) tensors, so that snapshot, restore,
    keeping some members and copying one member's row are the same few lines for every optimizer."""

    def __init__(self, groups: list[Group], state: dict[str, dict[str, torch.Tensor]]):
        self.groups, self.state = groups, state

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: list[float]) -> None:
        """One step of every member at its schedule lr (group g at lr * its ratio), in place."""
        self.state[APPLIED] = {"lr": torch.tensor(lrs, dtype=torch.float64)}
        self._step(params, grads, lrs)

    def _step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: list[float]) -> None:
        raise NotImplementedError

    def write_back(self, k: int, task: Task) -> None:
        """Member k's state into its own optimizer, in torch's format (the single run's checkpoint): its groups'
        lrs as the last step set them, and each parameter's state."""
        applied = self.state.get(APPLIED)
        if applied is not None:
            set_lr(task.optimizer, float(applied["lr"][k]), [g.scale for g in self.groups])
        self._write_back(k, task)

    def _write_back(self, k: int, task: Task) -> None:
        raise NotImplementedError

    def snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        return {n: {key: t.clone() for key, t in s.items()} for n, s in self.state.items()}

    def restore(self, snap: dict[str, dict[str, torch.Tensor]]) -> None:
        self.state = {n: {key: t.clone() for key, t in s.items()} for n, s in snap.items()}

    def rows(self, rows: list[int]) -> StackedUpdate:
        """The members `rows` only (a new update over their state)."""
        return type(self)(self.groups, {n: {key: t[rows].clone() for key, t in s.items()}
                                        for n, s in self.state.items()})

    def copy_row(self, k: int, other: StackedUpdate, i: int) -> None:
        """Member k's state from member i of `other` (a replay's result)."""
        for n, s in self.state.items():
            for key, t in s.items():
                t[k] = other.state[n][key][i]


def _per_member(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """Per-member scalars as a (K, 1, ...) float tensor: rounded to like's dtype as torch rounds a Python scalar."""
    return torch.tensor(values, dtype=torch.float64).to(like.dtype).to(like.device).view(-1, *[1] * (like.dim() - 1))


def _rows(stacks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every member's view of every stacked tensor, parameter by parameter, member by member."""
    return [row for t in stacks for row in t.unbind(0)]


def _foreach_mul_per_member(stacks: list[torch.Tensor], factors: list[float]) -> None:
    """stacks[i][k].mul_(factors[k]) for every i, k: as a Python scalar where the members' are the same."""
    if len(set(factors)) == 1:
        torch._foreach_mul_(stacks, factors[0])
    else:
        column = torch.tensor(factors, dtype=torch.float64)  # (K,), once for the group; each tensor rounds it once
        torch._foreach_mul_(stacks, [column.to(t.dtype).to(t.device).view(-1, *[1] * (t.dim() - 1)) for t in stacks])


def _foreach_div_per_member(stacks: list[torch.Tensor], divisors: list[list[float]]) -> None:
    """stacks[i][k].div_(divisors[i][k]) for every i, k: as a Python scalar where the members' are the same."""
    if all(len(set(row)) == 1 for row in divisors):
        torch._foreach_div_(stacks, [row[0] for row in divisors])
    else:
        torch._foreach_div_(stacks, [_per_member(row, t) for row, t in zip(divisors, stacks)])


class SGDUpdate(StackedUpdate):
    """torch.optim.SGD's step (torch/optim/sgd.py, _single_tensor_sgd): weight decay, momentum, dampening,
    Nesterov, maximize; a member's first step takes the gradient itself as its momentum buffer."""

    @classmethod
    def from_tasks(cls, tasks: list[Task], groups: list[Group], params: dict[str, torch.Tensor]) -> SGDUpdate:
        state = {}
        for group in groups:
            for n in group.names:
                bufs = [t.optimizer.state.get(dict(t.model.named_parameters())[n], {}).get("momentum_buffer")
                        for t in tasks]
                state[n] = {"momentum_buffer": torch.stack([torch.zeros_like(params[n][0]) if b is None else b
                                                            for b in bufs]),
                            "started": torch.tensor([b is not None for b in bufs], device=params[n].device)}
        return cls(groups, state)

    def _step(self, params, grads, lrs):
        with torch.no_grad():
            for group in self.groups:
                o = group.options
                momentum, dampening, wd = o["momentum"], o["dampening"], o["weight_decay"]
                for n in group.names:
                    p, g, s = params[n], grads[n], self.state[n]
                    if o["maximize"]:
                        g = -g
                    if wd != 0:
                        g = g.add(p, alpha=wd)
                    if momentum != 0:
                        buf = s["momentum_buffer"].mul_(momentum).add_(g, alpha=1 - dampening)  # (K, ...)
                        started = s["started"].view(-1, *[1] * (p.dim() - 1))
                        s["momentum_buffer"] = buf = torch.where(started, buf, g)  # the first step: clone(grad)
                        s["started"].fill_(True)
                        g = g.add(buf, alpha=momentum) if o["nesterov"] else buf
                    # member by member: add_(alpha=-lr) fuses the multiply into the add, one rounding; one op on
                    # the whole stack where the members' lrs are the same (range_test's seeds)
                    if len(set(lrs)) == 1:
                        p.add_(g, alpha=-(lrs[0] * group.scale))
                    else:
                        for k, lr in enumerate(lrs):
                            p[k].add_(g[k], alpha=-(lr * group.scale))

    def _write_back(self, k, task):
        named = dict(task.model.named_parameters())
        for group in self.groups:
            if group.options["momentum"] == 0:
                continue  # torch's SGD keeps no state without momentum
            for n in group.names:
                if bool(self.state[n]["started"][k]):
                    task.optimizer.state[named[n]]["momentum_buffer"] = self.state[n]["momentum_buffer"][k].clone()


class AdamUpdate(StackedUpdate):
    """torch.optim.Adam's and AdamW's step (torch/optim/adam.py, _single_tensor_adam, capturable=False):
    per-member step counts and moments, weight decay coupled (Adam) or decoupled (AdamW), amsgrad, maximize."""

    @classmethod
    def from_tasks(cls, tasks: list[Task], groups: list[Group], params: dict[str, torch.Tensor]) -> AdamUpdate:
        state = {}
        for group in groups:
            for n in group.names:
                own = [t.optimizer.state.get(dict(t.model.named_parameters())[n], {}) for t in tasks]
                zeros = torch.zeros_like(params[n][0])
                state[n] = {key: torch.stack([s.get(key, zeros) for s in own])
                            for key in ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if group.options["amsgrad"]
                                                                   else ()))}
                # the step count as torch keeps it: a float32 tensor, read back as a Python float
                state[n]["step"] = torch.tensor([float(s["step"]) if "step" in s else 0.0 for s in own],
                                                dtype=torch.float32)
        return cls(groups, state)

    def _step(self, params, grads, lrs):
        # one torch._foreach_* op per line over the group's parameters: on a CPU each runs torch's own
        # op tensor by tensor (its slow path), so every member rounds as its run alone, with one Python call
        # for the group instead of one per parameter (~1.5 s of a 5-seed, 1000-step range test, measured)
        with torch.no_grad():
            for group in self.groups:
                if not group.names:
                    continue
                o = group.options
                beta1, beta2 = o["betas"]
                wd, eps = o["weight_decay"], o["eps"]
                glrs = [lr * group.scale for lr in lrs]
                ps = [params[n] for n in group.names]  # each (K, ...)
                states = [self.state[n] for n in group.names]
                gs = [grads[n] for n in group.names]
                if o["maximize"]:
                    gs = torch._foreach_neg(gs)
                counts = [s["step"] for s in states]
                torch._foreach_add_(counts, 1)
                steps = torch.stack(counts).tolist()  # (n_params, K) Python floats, as torch reads its step
                if wd != 0:
                    if o.get("decoupled_weight_decay", False):
                        _foreach_mul_per_member(ps, [1 - lr * wd for lr in glrs])  # param.mul_(1 - lr * wd)
                    else:
                        gs = torch._foreach_add(gs, ps, alpha=wd)
                exp_avgs = [s["exp_avg"] for s in states]
                exp_avg_sqs = [s["exp_avg_sq"] for s in states]
                torch._foreach_lerp_(exp_avgs, gs, 1 - beta1)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, gs, gs, 1 - beta2)
                if o["amsgrad"]:
                    seconds = [s["max_exp_avg_sq"] for s in states]
                    torch._foreach_maximum_(seconds, exp_avg_sqs)
                else:
                    seconds = exp_avg_sqs
                denoms = torch._foreach_sqrt(seconds)
                _foreach_div_per_member(denoms, [[(1 - beta2 ** step) ** 0.5 for step in row] for row in steps])
                torch._foreach_add_(denoms, eps)
                # addcdiv_'s value multiplies inside the kernel (one rounding): each member with its own Python
                # scalar, as torch does; one op on the whole stack where the members' scalars are the same
                values = [[-(lr / (1 - beta1 ** step)) for lr, step in zip(glrs, row)] for row in steps]
                if all(len(set(row)) == 1 for row in values):
                    torch._foreach_addcdiv_(ps, exp_avgs, denoms, [row[0] for row in values])
                else:
                    torch._foreach_addcdiv_(_rows(ps), _rows(exp_avgs), _rows(denoms),
                                            [v for row in values for v in row])

    def _write_back(self, k, task):
        named = dict(task.model.named_parameters())
        for group in self.groups:
            for n in group.names:
                s = self.state[n]
                if float(s["step"][k]) == 0:
                    continue  # never stepped: torch has no state for it yet
                own = task.optimizer.state[named[n]]
                own["step"] = s["step"][k].clone()
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in s:
                        own[key] = s[key][k].clone()


UPDATES: dict[type, type[StackedUpdate]] = {torch.optim.SGD: SGDUpdate, torch.optim.Adam: AdamUpdate,
                                            torch.optim.AdamW: AdamUpdate}


def make_update(tasks: list[Task], stepped: set[str], params: dict[str, torch.Tensor],
                scales: list[float] | None = None) -> StackedUpdate:
    """The stacked update of these members' optimizer (checked by `why_not_update`), from their current state.

    scales: the groups' lr scales as the tasks were built (TaskRun.lr_scales); default from their optimizer now."""
    groups = groups_of(tasks, stepped, lr_scales(tasks[0].optimizer) if scales is None else scales)
    return UPDATES[type(tasks[0].optimizer)].from_tasks(tasks, groups, params)
