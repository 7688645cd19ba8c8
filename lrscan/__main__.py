"""`python -m lrscan COMMAND ...`: the `lrscan` command (lrscan/cli.py), for where the console script is not on PATH."""

from lrscan.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
