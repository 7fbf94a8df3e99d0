"""Reports: figures (matplotlib) and self-contained HTML pages of what a study found.

- :mod:`tempscope.report.sweep`: a sweep's report (entropy, coherence, the frontier, where
  coherence breaks) and its story in words;
- :mod:`tempscope.report.plots`: the shared bar-panel figure;
- :mod:`tempscope.report.degeneration`: the degeneration study's table and curve;
- :mod:`tempscope.report.calibration`: the calibration study's reliability diagram and T*.

The sweep report's names are re-exported here (``from tempscope.report import write_report``);
matplotlib and pandas load only when a report is drawn.
"""

from tempscope.report.sweep import (
    COLORS,
    DEFAULT_THRESHOLD,
    CoherenceBreak,
    coherence_break,
    plot_coherence,
    plot_entropy,
    plot_first_step,
    plot_frontier,
    steepest_fall,
    story,
    write_report,
)

__all__ = [
    "COLORS",
    "DEFAULT_THRESHOLD",
    "CoherenceBreak",
    "coherence_break",
    "plot_coherence",
    "plot_entropy",
    "plot_first_step",
    "plot_frontier",
    "steepest_fall",
    "story",
    "write_report",
]
