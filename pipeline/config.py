"""TrainConfig: every knob of a training run, in one frozen dataclass.

A field's name is its command-line flag (`--lre_min=-3`), its sweep parameter name and its wandb
config key, character for character. Values arrive three ways and go through the same checks:

- the command line, as `wandb agent` writes it: `--key=value` with the value rendered by Python's
  `str()` (`True`, `[100000, 150000]`, `-3.0`); a bare `--flag` sets a bool;
- a mapping (the sweep-locked `wandb.config`, a checkpoint, a YAML), via `from_mapping`;
- the defaults below.

Unknown keys and values of the wrong type raise `LrscanError` naming the key and the valid keys.

Each field is declared with its kind (`hyper`, `operational`, `location`): whether it changes what a
run computes. A resume may change operational fields only; the analysis compares runs on hyper ones.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrscan.pipeline.errors import LrscanError

SCHEDULES = ("range", "step", "constant")
STEP_MODES = ("exp", "linear")  # torch-lr-finder's words for the range test's spacing
INITS = ("lecture", "scaled")
WANDB_MODES = ("offline", "online", "disabled")
DATA_ENV = "LRSCAN_DATA"  # environment variable naming the word list when --data is not given


LOCAL_DATA = "data/names.txt"  # where a run looks first, from the folder it runs in
SETUP_DATA = Path(__file__).resolve().parents[1] / LOCAL_DATA  # where the set-up (`make data`) puts the word list


def cached_names_path(env: Mapping[str, str]) -> Path:
    """An installed lrscan's per-user copy of names.txt: $XDG_CACHE_HOME/lrscan/names.txt, else
    ~/.cache/lrscan/names.txt (`pipeline.train.data.find_names` downloads it there)."""
    root = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(root) / "lrscan" / "names.txt"


def default_data_path() -> str:
    """--data's default, the one way the trainer, the study and the examples find the word list: $LRSCAN_DATA,
    else data/names.txt in the current folder, else the set-up's copy (data/names.txt beside the pipeline package
    the code runs from), else the per-user cache's copy of an installed lrscan, so a notebook or a script in any
    folder finds it; else data/names.txt, which then does not exist and is named in the error."""
    if os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    if Path(LOCAL_DATA).exists():
        return LOCAL_DATA
    for found in (SETUP_DATA, cached_names_path(os.environ)):
        if found.is_file():
            return str(found)
    return LOCAL_DATA


WANDB_PROJECT_FORBIDDEN = "/\\#?%:"  # wandb.init's own rule (wandb_settings.validate_project)


def missing_data_message(path: str) -> str:
    """What to do when the word list `path` is not there, in words that work outside the repository."""
    return (f"data file {path!r} does not exist: give the word list with --data=PATH or ${DATA_ENV}=PATH, or fetch "
            f"makemore's names.txt with `python -m lrscan.pipeline.train.data fetch {path}`")


def default_wandb_mode() -> str:
    # `WANDB_MODE=online python -m pipeline.sweep ...` and the study's --wandb_mode reach every run this way.
    # A run a real `wandb agent` started (it sets WANDB_SWEEP_ID; lrscan's runner never does) belongs to the
    # sweep on the W&B server: offline, the server would never hear of it
    mode = os.environ.get("WANDB_MODE", "")
    if mode in WANDB_MODES:
        return mode
    return "online" if os.environ.get("WANDB_SWEEP_ID") else "offline"


def default_ckpt_dir() -> str:
    # beside the runs: a sweep sets WANDB_DIR to its own folder, so its checkpoints live there too
    return os.path.join(os.environ.get("WANDB_DIR") or ".", "checkpoints")


# What a field is. The trainer's resume check and the analysis' "which fields were swept" both
# read it from here, so the two can never disagree.
HYPER = "hyper"              # changes the numbers a run computes: a resume must keep it; runs are compared on it
OPERATIONAL = "operational"  # how a run is executed, logged or shown: may change between a run and its resumption
LOCATION = "location"        # where the run lives in W&B: a resume must keep it (one run, one history), not compared
FIELD_KINDS = (HYPER, OPERATIONAL, LOCATION)


def _config_field(kind: str, default: Any, help: str, factory: Any) -> Any:
    metadata = {"kind": kind, "help": help}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def hyper(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A field that changes what the run computes (the model, the data it sees, the lr schedule, the stops)."""
    return _config_field(HYPER, default, help, factory)


def operational(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A field that changes how a run is executed, logged or shown, never its numbers."""
    return _config_field(OPERATIONAL, default, help, factory)


def location(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A field that says where the run lives in W&B."""
    return _config_field(LOCATION, default, help, factory)


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str = operational(factory=default_data_path,
                            help=f"word list, one word per line (default ${DATA_ENV} or data/names.txt)")
    split_seed: int = hyper(42, "seed of the word shuffle before the 80/10/10 train/dev/test split")
    block_size: int = hyper(3, "context length: how many characters predict the next one")
    # task: the model, optimizer, batches and loss (default: the makemore MLP below)
    task: str = hyper("", "your own PyTorch model: path/to/file.py:make or package.module:make, where "
                          "make(seed, **task_args) returns a pipeline.Task (model, optimizer, batches, loss_fn); "
                          "empty: the makemore MLP, the one task that data, split_seed, block_size, n_embd, "
                          "n_hidden, init and batch_size apply to")
    task_args: dict[str, Any] = hyper(factory=dict, help="keyword arguments of the task's make, e.g. "
                                                         "{'width': 64} (numbers, strings, bools, lists, mappings)")
    # model
    n_embd: int = hyper(2, "embedding dimension of each character (the lecture's final model: 10)")
    n_hidden: int = hyper(100, "hidden tanh units (the lecture's final model: 200)")
    init: str = hyper("lecture", "weight init: 'lecture' = plain randn as in the video, "
                                 "'scaled' = tanh-gain/sqrt(fan_in), small logits")
    seed: int = hyper(2147483647, "seed of the weight init and of the minibatch sampling "
                                  "(the lecture's generator seed); a task's make(seed, ...) gets it")
    # optimization
    batch_size: int = hyper(32, "minibatch size")
    steps: int = hyper(1000, "training steps; for schedule=range also the number of lrs tried")
    schedule: str = hyper("range", "lr schedule: range (10**linspace(lre_min, lre_max, steps)), step, constant")
    lre_min: float = hyper(-3.0, "range test: first lr exponent (lr = 10**lre_min)")
    lre_max: float = hyper(0.0, "range test: last lr exponent, reached on the last step")
    step_mode: str = hyper("exp", "range test: exp (lr = 10**linspace(lre_min, lre_max, steps), the default) or "
                                  "linear (lr = linspace(10**lre_min, 10**lre_max, steps))")
    lr: float = hyper(0.1, "lr of schedule=constant, and the lr before the first decay step of schedule=step")
    decay_steps: tuple[int, ...] = hyper((100000,), "schedule=step: steps at which the lr drops, increasing, "
                                                    "e.g. [100000, 150000]")
    decay_lrs: tuple[float, ...] = hyper((0.01,), "schedule=step: the lr from each decay step on, one per decay step")
    # early stops
    stop_on_nonfinite: bool = hyper(True, "stop when the loss is NaN or inf (recorded as diverged_at_step; "
                                          "exit code 0)")
    stop_on_climb: bool = hyper(True, "range test: stop once the smoothed loss exceeds climb_factor x its best")
    climb_factor: float = hyper(4.0, "range test: the climb stop's threshold, as a multiple of the best smoothed loss")
    climb_burn_in_steps: int = hyper(100, "range test: no climb stop before this step, so an early spike cannot "
                                          "trigger it")
    smooth_beta: float = hyper(0.98, "range test: beta of the bias-corrected EMA of the loss (logged as smooth_loss)")
    # evaluation and output
    eval_every_steps: int = operational(0, "log the full dev loss every this many steps (0: only at the end)")
    final_eval: bool = operational(True, "evaluate the held-out splits when the run ends (train/dev/test for the "
                                         "makemore MLP, the task's evaluate); range_test() turns it off: its "
                                         "last model trained at the range's top lr and nothing judges it")
    samples: int = operational(5, "names sampled from the model and printed at the end")
    progress_every_steps: int = operational(100, "refresh the progress bar every this many steps")
    log_chunk_steps: int = operational(256, "steps handed to the logging process at a time (all are logged)")
    # system
    device: str = operational("cpu", "cpu, cuda, cuda:N or auto (cuda when available); a task's model and "
                                     "batches stay where its make put them")
    num_threads: int = operational(1, "torch CPU threads; 1 is fastest for this small model, above all beside "
                                      "other workers")
    # wandb
    wandb_mode: str = operational(factory=default_wandb_mode,
                                  help="offline (no account needed), online or disabled "
                                       "(default $WANDB_MODE, else online under `wandb agent`, else offline)")
    wandb_project: str = location(factory=lambda: os.environ.get("WANDB_PROJECT") or "lrscan",
                                  help="wandb project (default $WANDB_PROJECT or lrscan)")
    wandb_entity: str = location(factory=lambda: os.environ.get("WANDB_ENTITY", ""),
                                 help="wandb entity (team or user); default $WANDB_ENTITY or your default")
    wandb_group: str = operational("", "wandb group; sweeps put their key here so the analysis finds their runs")
    wandb_name: str = operational("", "wandb run name; empty: generated")
    wandb_tags: tuple[str, ...] = operational((), "wandb tags, e.g. ['lr_range', 'seed1']")
    wandb_job_type: str = operational("train", "wandb job_type")
    run_id: str = operational("", "wandb run id; empty: $WANDB_RUN_ID (set by wandb agent) or a new one")
    # checkpoints
    ckpt_dir: str = operational(factory=default_ckpt_dir,
                                help="folder of the checkpoints, one file per run id (default $WANDB_DIR/checkpoints)")
    ckpt_every_steps: int = operational(10000, "save a checkpoint every this many steps (0: only at the end)")
    pause_at_step: int = operational(0, "train up to this step, then save a checkpoint and end the run there, "
                                        "unfinished: the same run with a later pause_at_step (or 0) and --resume "
                                        "continues it (0: train to steps)")
    resume: bool = operational(False, "continue a run from its checkpoint (same wandb run id, no lost or repeated "
                                      "step): run_id's, else the one unfinished checkpoint in ckpt_dir that fits")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), field_types()[f.name]))
        _validate(self)

    # -- conversions -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists), as wandb.config and checkpoints store them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """A config from typed values (wandb.config, a checkpoint), over `base` or the defaults.

        Keys starting with '_' (wandb's own, e.g. `_wandb`) are ignored; a coupled sweep parameter
        (a mapping of fields, see `expand_coupled`) stands for its fields and wins over them.
        """
        names = set(field_names())
        plain = {k: v for k, v in values.items() if k in names}
        coupled: dict[str, Any] = {}
        for key, value in values.items():
            if key.startswith("_") or key in names:
                continue
            for k, v in expand_coupled(key, value).items():
                if k in coupled and coupled[k] != v:
                    raise LrscanError(f"{k} is given twice with different values ({coupled[k]!r} and {v!r})")
                coupled[k] = v
        current = base.to_dict() if base is not None else {}
        # a coupled parameter is what a sweep locked: it wins over the plain copy of the same field
        current.update(plain)
        current.update(coupled)
        return cls(**current)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# -- the command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> TrainConfig:
    """`--key=value` / `--key value` / bare `--bool_key` flags into a TrainConfig.

    Values are strings, typed by the field: `--decay_steps=[100000, 150000]` (what `${args}` renders
    for a list), `--decay_steps=100000,150000` and `--resume=True` all work.
    """
    types_ = field_types()
    values: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise LrscanError(f"unexpected argument {arg!r}: flags look like --key=value. "
                              f"Valid keys: {', '.join(field_names())}")
        key, eq, raw = arg[2:].partition("=")
        if key not in types_ and eq:
            # a coupled sweep parameter: --lre_range={'lre_min': -3.0, 'lre_max': 0.0}
            for k, v in expand_coupled(key, _literal_or_raw(raw)).items():
                if k in values:
                    raise LrscanError(f"--{k} given twice (also inside --{key})")
                values[k] = _coerce(k, v, types_[k])
            i += 1
            continue
        if key not in types_:
            raise LrscanError(_unknown_message([key]))
        if not eq:
            # `--key value`, or a bare boolean flag
            nxt = args[i + 1] if i + 1 < len(args) else None
            if types_[key] is bool and (nxt is None or nxt.startswith("--") or nxt.lower() not in _BOOL_WORDS):
                raw = "True"
            elif nxt is None:
                raise LrscanError(f"--{key} needs a value (--{key}=VALUE)")
            else:
                raw = nxt
                i += 1
        if key in values:
            raise LrscanError(f"--{key} given twice")
        values[key] = _parse_string(key, raw, types_[key])
        i += 1
    return TrainConfig(**values)


def expand_coupled(key: str, value: Any) -> dict[str, Any]:
    """{key: value} as fields: a field stays itself; a coupled parameter becomes its fields.

    A range is a pair, and a grid over two parameters is their product. To sweep hand-picked pairs,
    a sweep gives one parameter (any name that is not a field, e.g. `lre_range`) whose values are
    mappings of fields: `values: [{lre_min: -3.0, lre_max: 0.0}, {lre_min: -2.0, lre_max: -0.5}]`.
    W&B's controller and `pipeline.sweep` expand it the same way (one point per mapping); the agent
    passes it as `--lre_range={'lre_min': -3.0, 'lre_max': 0.0}` and as a dict in `wandb.config`.
    """
    names = field_names()
    if key in names:
        return {key: value}
    if isinstance(value, Mapping) and value and all(isinstance(k, str) and k in names for k in value):
        return dict(value)
    if isinstance(value, Mapping):
        bad = sorted(str(k) for k in value if k not in names)
        raise LrscanError(f"coupled parameter {key!r} has unknown key(s) {', '.join(map(repr, bad))}. "
                          f"Valid keys: {', '.join(names)}")
    raise LrscanError(_unknown_message([key]))


def _literal_or_raw(raw: str) -> Any:
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def field_kind(name: str) -> str:
    """HYPER, OPERATIONAL or LOCATION: what field `name` is (see `hyper`, `operational`, `location`)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            return f.metadata["kind"]
    raise LrscanError(_unknown_message([name]))


def fields_of_kind(*kinds: str) -> tuple[str, ...]:
    """The names of the fields of any of `kinds`, in declaration order."""
    unknown = set(kinds) - set(FIELD_KINDS)
    if unknown:
        raise ValueError(f"unknown field kind(s) {sorted(unknown)}; kinds are {', '.join(FIELD_KINDS)}")
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["kind"] in kinds)


def hyperparameter_names() -> tuple[str, ...]:
    """The fields that change what a run computes: the ones two runs are compared on."""
    return fields_of_kind(HYPER)


def help_text(width: int = 100) -> str:
    """`--help`: every key with its default, then its help wrapped to `width` in one column."""
    import textwrap

    flags = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        shown = list(default) if isinstance(default, tuple) else default
        flags.append((f"  --{f.name}={shown!s}", f.metadata.get("help", "")))
    column = min(32, max(len(flag) for flag, _ in flags) + 2)  # a longer flag puts its help on the next line
    lines = ["usage: lrscan train [--key=value ...]   (python -m lrscan.pipeline.train)", "", "keys (default):"]
    for flag, help_ in flags:
        wrapped = textwrap.wrap(help_, max(20, width - column), break_on_hyphens=False) or [""]
        if len(flag) + 2 > column:
            lines.append(flag)
        else:
            lines.append(flag.ljust(column) + wrapped.pop(0))
        lines += [" " * column + rest for rest in wrapped]
    return "\n".join(lines)


def parse_value(key: str, raw: str) -> Any:
    """One string value (as a sweep's `${args}` renders it) typed for field `key`."""
    types_ = field_types()
    if key not in types_:
        raise LrscanError(_unknown_message([key]))
    return _parse_string(key, raw, types_[key])


# -- typing and checks ---------------------------------------------------------------------------

_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


@functools.cache  # resolving the annotations is ~25 ms, asked for every config a pack or a study builds
def field_types() -> dict[str, Any]:
    """Field name -> its type (int, float, bool, str, tuple[int, ...] ...)."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return f"list of {typing.get_args(tp)[0].__name__}"
    if typing.get_origin(tp) is dict:
        return "mapping, e.g. {'width': 64}"
    return tp.__name__


def _unknown_message(keys: Sequence[str]) -> str:
    which = ", ".join(repr(k) for k in keys)
    return f"unknown config key {which}. Valid keys: {', '.join(field_names())}"


def _parse_string(key: str, raw: str, tp: Any) -> Any:
    raw = raw.strip()
    if tp is str:
        return raw
    if typing.get_origin(tp) is dict:
        if raw in ("", "{}"):
            return {}
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise LrscanError(f"--{key}={raw!r}: expected {_type_name(tp)}") from None
    if tp is bool:
        word = _BOOL_WORDS.get(raw.lower())
        if word is None:
            raise LrscanError(f"--{key}={raw!r}: expected a bool (True or False)")
        return word
    if typing.get_origin(tp) is tuple:
        if raw in ("", "[]", "()"):
            return ()
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            # a bare comma list, e.g. 100000,150000 or lr_range,seed1, or a list typed unquoted: [a, b]
            bare = raw[1:-1] if raw[:1] + raw[-1:] in ("[]", "()") else raw
            value = [part.strip() for part in bare.split(",") if part.strip()]
            if typing.get_args(tp)[0] is not str:
                value = [_literal(key, part, typing.get_args(tp)[0]) for part in value]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return value
    return _literal(key, raw, tp)


def _literal(key: str, raw: str, tp: Any) -> Any:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if tp is float and raw.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            value = float(raw)
        else:
            raise LrscanError(f"--{key}={raw!r}: expected {_type_name(tp)}") from None
    return value


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a typed value against the field type; the few safe conversions only (3.0 -> 3, 3 -> 3.0)."""
    bad = LrscanError(f"{key}={value!r}: expected {_type_name(tp)}, got {type(value).__name__}")
    if typing.get_origin(tp) is dict:
        if isinstance(value, str):
            value = _parse_string(key, value, tp)
        if not isinstance(value, Mapping):
            raise bad
        return _plain_mapping(key, value)
    if typing.get_origin(tp) is tuple:
        if isinstance(value, str):
            value = _parse_string(key, value, tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(key, v, inner) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        # wandb and YAML render whole floats like 1e5 as floats; take them when exact
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported field type {tp!r}")  # a bug in TrainConfig, not user input


def _plain_mapping(key: str, value: Mapping) -> dict[str, Any]:
    """A mapping as plain JSON-like values (tuples become lists), as wandb.config and a checkpoint give it back,
    so a run, its W&B config and its resumption see the same values."""
    def plain(path: str, v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return [plain(f"{path}[{i}]", x) for i, x in enumerate(v)]
        if isinstance(v, Mapping):
            bad_keys = [k for k in v if not isinstance(k, str)]
            if bad_keys:
                raise LrscanError(f"{path}: key {bad_keys[0]!r} is not a string")
            return {k: plain(f"{path}[{k!r}]", x) for k, x in v.items()}
        raise LrscanError(f"{path}={v!r}: a {type(v).__name__}; use numbers, strings, bools, None, lists or mappings")

    return plain(key, value)


def _validate(c: TrainConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise LrscanError(message)

    need(c.schedule in SCHEDULES, f"schedule={c.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    need(c.step_mode in STEP_MODES, f"step_mode={c.step_mode!r}: expected one of {', '.join(STEP_MODES)}")
    need(c.init in INITS, f"init={c.init!r}: expected one of {', '.join(INITS)}")
    need(c.wandb_mode in WANDB_MODES, f"wandb_mode={c.wandb_mode!r}: expected one of {', '.join(WANDB_MODES)}")
    need(c.device in ("cpu", "cuda", "auto") or c.device.startswith("cuda:"),
         f"device={c.device!r}: expected cpu, cuda, cuda:N or auto")
    for name in ("block_size", "n_embd", "n_hidden", "batch_size", "steps", "log_chunk_steps", "progress_every_steps",
                 "num_threads"):
        need(getattr(c, name) >= 1, f"{name}={getattr(c, name)}: must be >= 1")
    for name in ("eval_every_steps", "ckpt_every_steps", "pause_at_step", "climb_burn_in_steps", "samples"):
        need(getattr(c, name) >= 0, f"{name}={getattr(c, name)}: must be >= 0")
    for name in ("lre_min", "lre_max", "lr", "climb_factor", "smooth_beta"):
        need(math.isfinite(getattr(c, name)), f"{name}={getattr(c, name)}: must be a finite number")
    need(c.lre_min <= c.lre_max, f"lre_min={c.lre_min} > lre_max={c.lre_max}: the range test goes from low to high lr")
    need(c.step_mode != "linear" or c.lre_max < 308,
         f"lre_max={c.lre_max} with step_mode=linear: 10**lre_max overflows (lre_max must be < 308)")
    need(c.lr > 0, f"lr={c.lr}: must be > 0")
    need(c.climb_factor > 1, f"climb_factor={c.climb_factor}: must be > 1")
    need(0 <= c.smooth_beta < 1, f"smooth_beta={c.smooth_beta}: must be in [0, 1)")
    need(len(c.decay_steps) == len(c.decay_lrs),
         f"decay_steps has {len(c.decay_steps)} values but decay_lrs has {len(c.decay_lrs)}: "
         f"give one lr per decay step")
    need(all(s > 0 for s in c.decay_steps), f"decay_steps={list(c.decay_steps)}: steps must be > 0")
    need(all(a < b for a, b in zip(c.decay_steps, c.decay_steps[1:])),
         f"decay_steps={list(c.decay_steps)}: must be strictly increasing")
    need(all(lr > 0 and math.isfinite(lr) for lr in c.decay_lrs),
         f"decay_lrs={list(c.decay_lrs)}: lrs must be finite and > 0")
    need(c.task == "" or ":" in c.task,
         f"task={c.task!r}: expected path/to/file.py:FUNCTION or package.module:FUNCTION")
    need(c.task != "" or not c.task_args, f"task_args={c.task_args!r} given without --task: the makemore MLP takes "
                                          f"its own flags (n_embd, n_hidden, ...)")
    need(c.run_id == "" or c.run_id.replace("-", "").replace("_", "").isalnum(),
         f"run_id={c.run_id!r}: use letters, digits, - and _ only")
    # W&B refuses these in wandb.init, once a run has started: said here, before anything does
    bad = sorted({ch for ch in c.wandb_project if ch in WANDB_PROJECT_FORBIDDEN})
    need(not bad and len(c.wandb_project) <= 128,
         f"wandb_project={c.wandb_project!r}: W&B project names are at most 128 characters, without "
         f"{' '.join(WANDB_PROJECT_FORBIDDEN)} (found {' '.join(bad) or 'too many characters'})")


