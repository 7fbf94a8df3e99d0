"""``tempscope report DIR``: figures and a self-contained HTML page for a sweep directory."""

from __future__ import annotations

import argparse

from tempscope.cli.common import check_output_dir, check_output_file, parse_float


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
    p.add_argument("--threshold", default="1", metavar="NATS",
                   help="coherence counts as broken this many nats/token below its value at "
                   "the lowest temperature (default 1)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from tempscope.report.sweep import write_report
    from tempscope.study.grid import read_manifest

    threshold = parse_float(args.threshold, "--threshold")
    if not 0 < threshold < math.inf:
        raise ValueError(f"--threshold must be a number of nats > 0, got {args.threshold!r}")
    read_manifest(args.run_dir)  # a missing or damaged run folder first, named
    # Checked before any figure is drawn: the page, and the figures folder beside it.
    html = check_output_file(args.out or str(Path(args.run_dir) / "report.html"), "--out")
    check_output_dir(str(html.parent / "figures"), "the figures folder")
    path = write_report(args.run_dir, out=html, threshold=threshold)
    print(f"report written to {path}")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0
