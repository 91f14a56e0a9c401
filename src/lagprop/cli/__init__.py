"""The ``lagprop`` command line: one module per subcommand, dispatched here.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``.  A
:class:`~lagprop.errors.LagpropError` becomes a one-line message on stderr and its exit code
(2 for bad input, 3 for divergence); argparse's own errors also exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LagpropError

# subcommand name -> module (relative to this package)
COMMANDS = {
    "train": ".train",
    "report": ".report",
    "predict": ".predict",
    "audit-locality": ".audit",
    "compare": ".compare",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lagprop",
        description="Train neural networks by searching saddle points of a Lagrangian "
                    "(Betti, Gori, Marra 2018), with backpropagation beside it.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for mod in COMMANDS.values():
        importlib.import_module(mod, __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # for --config / --resume (cli/common.py)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except LagpropError as e:
        print(f"lagprop {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"lagprop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
