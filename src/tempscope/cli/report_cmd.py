"""``tempscope report DIR``: figures and a self-contained HTML page for a sweep directory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write DIR/report.html (figures embedded, works offline) for a sweep",
        description="Turn a `tempscope sweep --out DIR` directory into figures (DIR/figures/) "
        "and one HTML page that says which temperatures stay coherent on this model. "
        "Example: tempscope report runs/smol --open",
    )
    p.add_argument("run_dir", metavar="DIR", help="a directory written by tempscope sweep")
    p.add_argument("--out", metavar="FILE.html", default=None,
                   help="where the page goes (default DIR/report.html)")
    p.add_argument("--threshold", type=float, default=1.0, metavar="NATS",
                   help="coherence counts as broken this many nats/token below its value at "
                   "the lowest temperature (default 1)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tempscope.report import write_report

    path = write_report(args.run_dir, out=args.out, threshold=args.threshold)
    print(f"report written to {path}")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0
