"""Expand a W&B sweep's `parameters` into points, the way W&B's open-source engine does.

Hand-written rather than calling `sweeps` (wandb/sweeps): that package pins numpy<2 and pulls
scipy + scikit-learn for what is, for a grid, an ordered Cartesian product. The rules below are
copied from `sweeps` 0.3.0 (`params.py`, `grid_search.py`, `config/schema.json`), and
tests/pipeline/sweep/test_grid.py checks them against the real package when it is installed:

- parameter kinds are inferred like `sweeps.config.fill_parameter`: `values` -> categorical
  (with `probabilities` -> categorical_w_probabilities), `value` -> constant, `min`/`max` both ints
  -> int_uniform, numbers -> uniform, otherwise the `distribution` key; `parameters` -> nested;
- names are walked sorted at each nesting level (`HyperParameterSet.from_config`), and the grid is
  `itertools.product` over the categorical ones in that order: the **last name varies fastest**;
- `int_uniform` becomes `range(min, max + 1)` (max included), `q_uniform` becomes
  `numpy.arange(min, max, q)` (max excluded, float drift kept: that is what W&B runs);
- values that dump to the same YAML (`1` and `1.0`) are one grid value; the last spelling wins;
- a grid refuses every other distribution ("disallowed type with grid search").

A point is a nested dict {name: value} in the engine's key order (`HyperParameterSet.to_config`):
plain names sorted, then the nested blocks; a nested `parameters` block gives a dict value, as
`run.config` gets it under `wandb agent`, and a mapping value keeps the YAML's key order, because
`${args}` renders it with `str()`: `--lre_range={'lre_min': -3.0, 'lre_max': 0.0}`.

Random search samples each parameter independently with a seeded `random.Random`: the same
distributions as W&B, not the same draws (W&B's draws are unseeded anyway).
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import yaml

from lrscan.pipeline.errors import LrscanError

GRID_KINDS = ("categorical", "constant", "int_uniform", "q_uniform")
# how the engine joins nested names while it walks them (`params.HyperParameterSet.NESTING_DELIMITER`)
NESTING_DELIMITER = ".wbnest[599c28ca25da]."

# distribution name -> (required keys, optional keys), besides `distribution` itself
_DISTRIBUTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "constant": (frozenset({"value"}), frozenset()),
    "categorical": (frozenset({"values"}), frozenset()),
    "categorical_w_probabilities": (frozenset({"values", "probabilities"}), frozenset()),
    "int_uniform": (frozenset({"min", "max"}), frozenset()),
    "uniform": (frozenset({"min", "max"}), frozenset()),
    "q_uniform": (frozenset({"min", "max"}), frozenset({"q"})),
    "log_uniform": (frozenset({"min", "max"}), frozenset()),
    "log_uniform_values": (frozenset({"min", "max"}), frozenset()),
    "inv_log_uniform": (frozenset({"min", "max"}), frozenset()),
    "inv_log_uniform_values": (frozenset({"min", "max"}), frozenset()),
    "q_log_uniform": (frozenset({"min", "max"}), frozenset({"q"})),
    "q_log_uniform_values": (frozenset({"min", "max"}), frozenset({"q"})),
    "normal": (frozenset(), frozenset({"mu", "sigma"})),
    "q_normal": (frozenset(), frozenset({"mu", "sigma", "q"})),
    "log_normal": (frozenset(), frozenset({"mu", "sigma"})),
    "q_log_normal": (frozenset(), frozenset({"mu", "sigma", "q"})),
    "beta": (frozenset(), frozenset({"a", "b"})),
    "q_beta": (frozenset(), frozenset({"a", "b", "q"})),
}
_DEFAULTS = {"mu": 0.0, "sigma": 1.0, "q": 1.0, "a": 1.0, "b": 1.0}


@dataclass(frozen=True)
class Parameter:
    """One leaf of `parameters`: its path (nested names), kind and spec with defaults filled."""

    path: tuple[str, ...]
    kind: str
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        return ".".join(self.path)


def _is_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def classify(name: str, spec: Any) -> str:
    """The W&B kind of one parameter spec, or 'nested'; LrscanError naming the parameter if malformed."""
    if not isinstance(spec, Mapping):
        raise LrscanError(f"parameter {name!r}: expected a mapping such as {{values: [...]}} or {{value: x}}, "
                          f"got {spec!r}")
    keys = set(spec)
    if keys == {"parameters"}:
        if not isinstance(spec["parameters"], Mapping) or not spec["parameters"]:
            raise LrscanError(f"parameter {name!r}: nested 'parameters' must be a non-empty mapping")
        return "nested"
    dist = spec.get("distribution")
    if dist is None:
        if "values" in keys:
            dist = "categorical_w_probabilities" if "probabilities" in keys else "categorical"
        elif "value" in keys:
            dist = "constant"
        elif {"min", "max"} <= keys:
            dist = "int_uniform" if _is_int(spec["min"]) and _is_int(spec["max"]) else "uniform"
        else:
            raise LrscanError(f"parameter {name!r}: give values, value, min/max or a distribution "
                              f"(got keys {sorted(keys)})")
    if dist not in _DISTRIBUTIONS:
        raise LrscanError(f"parameter {name!r}: unknown distribution {dist!r}; W&B knows {', '.join(_DISTRIBUTIONS)}")
    required, optional = _DISTRIBUTIONS[dist]
    missing = sorted(required - keys)
    extra = sorted(keys - required - optional - {"distribution"})
    if missing or extra:
        raise LrscanError(f"parameter {name!r}: distribution {dist} needs {sorted(required) or 'no keys'}"
                          + (f", missing {missing}" if missing else "") + (f", unknown keys {extra}" if extra else ""))
    if "values" in keys and (not isinstance(spec["values"], list) or not spec["values"]):
        raise LrscanError(f"parameter {name!r}: values must be a non-empty list (an empty grid runs nothing)")
    if dist == "categorical_w_probabilities":
        probs = spec["probabilities"]
        one_per_value = isinstance(probs, list) and len(probs) == len(spec["values"])
        if not one_per_value or not all(_is_number(p) and p >= 0 for p in probs):
            raise LrscanError(f"parameter {name!r}: probabilities must be one non-negative number per value")
        if not math.isclose(sum(probs), 1.0, abs_tol=1e-8):
            raise LrscanError(f"parameter {name!r}: probabilities {probs} do not sum to 1")
    for key in ("min", "max", "q", "mu", "sigma", "a", "b"):
        if key in keys and not _is_number(spec[key]):
            raise LrscanError(f"parameter {name!r}: {key} must be a number, got {spec[key]!r}")
    if dist == "int_uniform" and not (_is_int(spec["min"]) and _is_int(spec["max"])):
        raise LrscanError(f"parameter {name!r}: int_uniform needs integer min and max")
    if "min" in keys and spec["min"] >= spec["max"]:
        raise LrscanError(f"parameter {name!r}: min {spec['min']} is not less than max {spec['max']}")
    if "q" in keys and spec["q"] <= 0:
        raise LrscanError(f"parameter {name!r}: q must be > 0")
    if dist.endswith("_values") and spec["min"] <= 0:
        raise LrscanError(f"parameter {name!r}: {dist} needs min > 0")
    return dist


def flatten(parameters: Any, prefix: tuple[str, ...] = ()) -> list[Parameter]:
    """The leaves of `parameters`, walked sorted by name at every level (W&B's order)."""
    if not isinstance(parameters, Mapping) or not parameters:
        where = ".".join(prefix) or "parameters"
        raise LrscanError(f"{where}: expected a non-empty mapping of parameter names (an empty grid runs nothing)")
    leaves: list[Parameter] = []
    for key in sorted(parameters):
        if not isinstance(key, str) or not key or not (key[0].isalpha() or key[0] == "_"):
            raise LrscanError(f"parameter name {key!r}: must be a string starting with a letter or _")
        path = prefix + (key,)
        spec = parameters[key]
        kind = classify(".".join(path), spec)
        if kind == "nested":
            leaves.extend(flatten(spec["parameters"], path))
            continue
        filled = dict(spec)
        _, optional = _DISTRIBUTIONS[kind]
        for opt in optional:
            filled.setdefault(opt, _DEFAULTS[opt])
        leaves.append(Parameter(path, kind, filled))
    return leaves


def _value_key(value: Any) -> str:
    """W&B's grid identity of a value (`grid_search.yaml_hash` without the md5)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return yaml.dump(value, default_flow_style=True, sort_keys=True)


def grid_values(param: Parameter) -> list[Any]:
    """The distinct values one grid parameter takes, in W&B's order."""
    if param.kind == "constant":
        return [param.spec["value"]]
    if param.kind == "int_uniform":
        raw = list(range(param.spec["min"], param.spec["max"] + 1))
    elif param.kind == "q_uniform":
        raw = np.arange(param.spec["min"], param.spec["max"], param.spec["q"]).tolist()
    elif param.kind == "categorical":
        raw = list(param.spec["values"])
    else:
        raise LrscanError(
            f"parameter {param.name!r} is a disallowed type with grid search ({param.kind}): a grid takes only "
            f"values, value, int_uniform or q_uniform; use method: random for continuous distributions")
    # dict(zip(...)) as W&B does: one entry per distinct key, the last spelling of a key wins,
    # in the order the keys first appear
    by_key: dict[str, Any] = {}
    for value in raw:
        by_key[_value_key(value)] = value
    return list(by_key.values())


def _nest(assignments: Sequence[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    """One point, built as the engine's `HyperParameterSet.to_config` builds a run's config.

    Key order matters: `${args}` renders a dict value with `str()`, so its order is the command line.
    Leaves come in walk order (names sorted); `_renest` then moves each nested leaf, in sorted order
    of the delimited names, under its parent, which a parent not seen yet joins at the end. Values are
    copied untouched, so a mapping value keeps the YAML's key order, as `wandb agent` passes it.
    """
    flat = {NESTING_DELIMITER.join(path): copy.deepcopy(value) for path, value in assignments}
    for key in sorted(flat):
        if NESTING_DELIMITER not in key:
            continue
        *parents, leaf = key.split(NESTING_DELIMITER)
        node = flat
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = flat.pop(key)
    return flat


def grid_points(parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every grid point, in W&B's order (names sorted, last varies fastest)."""
    leaves = flatten(parameters)
    columns = [grid_values(p) for p in leaves]
    return [_nest(list(zip([p.path for p in leaves], combo))) for combo in itertools.product(*columns)]


def grid_size(parameters: Mapping[str, Any]) -> int:
    return math.prod(len(grid_values(p)) for p in flatten(parameters))


def _sample(param: Parameter, rng: random.Random) -> Any:
    s = param.spec
    kind = param.kind

    def quantize(x: float) -> Any:
        q = s["q"]
        out = round(x / q) * q
        return int(out) if _is_int(q) else float(out)

    if kind == "constant":
        return s["value"]
    if kind == "categorical":
        return rng.choice(s["values"])
    if kind == "categorical_w_probabilities":
        return rng.choices(s["values"], weights=s["probabilities"])[0]
    if kind == "int_uniform":
        return rng.randint(s["min"], s["max"])
    if kind == "uniform":
        return rng.uniform(s["min"], s["max"])
    if kind == "q_uniform":
        return quantize(rng.uniform(s["min"], s["max"]))
    if kind == "log_uniform":  # min/max are natural-log exponents
        return math.exp(rng.uniform(s["min"], s["max"]))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"])))
    if kind == "inv_log_uniform":
        return math.exp(-rng.uniform(s["min"], s["max"]))
    if kind == "inv_log_uniform_values":
        return math.exp(-rng.uniform(-math.log(s["max"]), -math.log(s["min"])))
    if kind == "q_log_uniform":
        return quantize(math.exp(rng.uniform(s["min"], s["max"])))
    if kind == "q_log_uniform_values":
        return quantize(math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"]))))
    if kind == "normal":
        return rng.gauss(s["mu"], s["sigma"])
    if kind == "q_normal":
        return quantize(rng.gauss(s["mu"], s["sigma"]))
    if kind == "log_normal":
        return rng.lognormvariate(s["mu"], s["sigma"])
    if kind == "q_log_normal":
        return quantize(rng.lognormvariate(s["mu"], s["sigma"]))
    if kind == "beta":
        return rng.betavariate(s["a"], s["b"])
    if kind == "q_beta":
        return quantize(rng.betavariate(s["a"], s["b"]))
    raise AssertionError(kind)  # classify() admits only the kinds above


def random_points(parameters: Mapping[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` independent draws; point i is the same for any count >= i + 1 with the same seed."""
    if count < 1:
        raise LrscanError(f"random search: count={count}, need at least 1 run")
    leaves = flatten(parameters)
    rng = random.Random(seed)
    return [_nest([(p.path, _sample(p, rng)) for p in leaves]) for _ in range(count)]
