"""The one exception type lrscan raises for bad user input.

Every entrypoint catches it at the top and prints `error: <message>` on one line with exit code 2,
so a bad flag, YAML, data file or run source never ends in a traceback.
"""

import sys


class LrscanError(Exception):
    """Bad input from the user: a flag, a sweep file, a data file, a run source."""


def exit_with(err: LrscanError, prog: str) -> "NoReturn":  # noqa: F821
    print(f"{prog}: error: {err}", file=sys.stderr)
    raise SystemExit(2)
