"""``lagprop report DIR``: PNG plots and a one-page Markdown summary of a run (lagprop.report)."""

from __future__ import annotations

import argparse

from ..report import make_report


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="plots and a one-page summary of a run",
                       description="Write learning curves, constraint violation, lambda per layer and (with l1) "
                                   "the support map as PNGs, and report.md, into DIR/report/.")
    p.add_argument("dir", metavar="DIR", help="the --out folder of a 'lagprop train' run")
    p.add_argument("--out", default=None, help="where to write (default DIR/report)")
    p.add_argument("--no-support", action="store_true",
                   help="skip the support map (it reloads the data and relaxes the state)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    md = make_report(args.dir, args.out, support=not args.no_support)
    print(f"wrote {md} and its plots")
    return 0
