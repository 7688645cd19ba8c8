"""`lrscan COMMAND ...`: the one command line (study, train, sweep, analyze), read the way `wandb sweep` reads.

    lrscan study --size=smoke                   # range test -> pick -> prove -> decay grid -> report
    lrscan train --schedule=range --steps=1000  # one run
    lrscan sweep lr_range                       # a sweep lrscan ships, by name (or a YAML file of yours)
    lrscan sweep --list                         # the shipped sweeps and the question each answers
    lrscan sweep lr_range --export my.yaml      # a copy to edit, for `wandb sweep my.yaml` or `lrscan sweep my.yaml`
    lrscan analyze wandb --group lr_range-1a2b  # read runs, pick, report

Each command is the module it names (`python -m lrscan.pipeline.study`, `... .train`, `... .sweep`,
`python -m lrscan.analysis`), with the same flags, output and exit codes; `lrscan-study`,
`lrscan-train`, `lrscan-sweep` and `lrscan-analyze` stay as aliases. Bad input is one line
`lrscan ...: error: ...`, exit 2, before anything starts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lrscan.pipeline.errors import LrscanError

PROG = "lrscan"
# command -> (what it does, the module whose main() runs it)
COMMANDS = {
    "study": ("the whole study, resumable: range test -> pick -> prove -> decay grid -> report",
              "lrscan.pipeline.study.__main__"),
    "train": ("one training run (a range test, a step decay, a constant lr) of the MLP or your --task",
              "lrscan.pipeline.train.__main__"),
    "sweep": ("a W&B sweep YAML run locally (offline), packed, resumable; a shipped one by name",
              "lrscan.pipeline.sweep.__main__"),
    "analyze": ("read runs (offline folders or W&B), pick the exponent with a CI, write a report",
                "lrscan.analysis.__main__"),
}
ALIASES = {"analyse": "analyze", "analysis": "analyze"}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [ARGS ...]   ({PROG} COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (what, _) in COMMANDS.items()]
    lines += ["", "sweeps:", f"  {PROG} sweep --list                  the sweeps lrscan ships, with their questions",
              f"  {PROG} sweep NAME [flags]            run one by name (or a YAML file of yours)",
              f"  {PROG} sweep NAME --export FILE      write one out to edit and hand to `wandb sweep`",
              "", "Python: import lrscan; lrscan.find(make, horizon=...)  (docs/quickstart.md)"]
    return "\n".join(lines)


def fail(message: str, prog: str = PROG) -> None:
    """lrscan's bad-input exit: one line on stderr, exit 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"{PROG} {version('lrscan')}")
        except PackageNotFoundError:  # a checkout run without installing
            print(f"{PROG} (not installed)")
        return 0
    command, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)}; `{PROG} --help` says what each does)")
    if command == "sweep":
        rest = _sweep_arguments(rest)
        if rest is None:
            return 0
    code = _module_main(COMMANDS[command][1])(rest)
    return int(code or 0)


def _module_main(module: str) -> Callable[[list[str]], int | None]:
    import importlib

    return importlib.import_module(module).main


def _sweep_arguments(rest: list[str]) -> list[str] | None:
    """`lrscan sweep`'s own words (--list, a shipped sweep's name, --export FILE) turned into the sweep runner's
    arguments; None when the command was answered here (a list printed, a file exported)."""
    from lrscan.catalog import export_sweep, shipped_sweeps, sweep_path

    prog = f"{PROG} sweep"
    if "--list" in rest:
        if len(rest) > 1:
            fail(f"--list takes nothing else (got {' '.join(a for a in rest if a != '--list')})", prog)
        sweeps = shipped_sweeps()
        width = max(len(s.name) for s in sweeps)
        print("\n".join(f"{s.name:<{width}}  {s.question}" for s in sweeps))
        print(f"\nrun one: {PROG} sweep NAME; edit one: {PROG} sweep NAME --export NAME.yaml, then "
              f"`wandb sweep NAME.yaml` or `{PROG} sweep NAME.yaml`")
        return None
    export, rest = _take_option(rest, "--export", prog)
    target = next((a for a in rest if not a.startswith("-")), None)
    if export is not None:
        if target is None or len(rest) != 1:
            fail(f"--export FILE takes one shipped sweep's name, e.g. `{PROG} sweep lr_range --export lr_range.yaml`",
                 prog)
        try:
            dest = export_sweep(target, export)
        except LrscanError as e:
            fail(str(e), prog)
        print(f"wrote {dest}: edit it, then `wandb sweep {dest}` (W&B's agents) or `{PROG} sweep {dest}` (here)")
        return None
    if target is None or Path(target).exists() or target.startswith("-"):
        return rest  # the runner says what is missing or wrong about a file
    try:
        path = sweep_path(target)
    except LrscanError as e:
        fail(str(e), prog)
    return [str(path) if a == target else a for a in rest]


def _take_option(args: list[str], name: str, prog: str) -> tuple[str | None, list[str]]:
    """`--name VALUE` or `--name=VALUE` taken out of `args`."""
    out, value, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg == name:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                fail(f"{name} needs a file name, e.g. {name} lr_range.yaml", prog)
            value, i = args[i + 1], i + 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
        i += 1
    return value, out


if __name__ == "__main__":
    raise SystemExit(main())
