"""The calibration study's report: the NLL-vs-T curve, T*, ECE and Brier at T = 1 and T*, the
two reliability diagrams, and the sampling temperature that matches the human text.

:func:`write_calibration_report` reads a study directory (:mod:`tempscope.study.calibration_study`)
and writes, inside it::

    figures/calibration.png   NLL(T), samples' cross-entropy vs T, reliability at T = 1 and T*
    report.md                 table, verdicts, settings and run time (for docs/)
    report.html               the same, self-contained (the figure inlined)
    results.json              every number (what ``--json`` prints)
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tempscope.errors import TempscopeError
from tempscope.study.calibration import Calibration, TemperatureReport
from tempscope.study.calibration_study import CalibrationStudy, load_calibration

__all__ = ["calibration_results", "direction", "plot_calibration", "write_calibration_report"]

GUO = ("Guo, Pleiss, Sun, Weinberger: On Calibration of Modern Neural Networks, ICML 2017 "
       "(temperature scaling; ECE with 15 equal-width bins)")
CLOSE = 0.05  # |T* - 1| within this: "close to calibrated at T = 1"


def direction(cal: Calibration) -> str:
    """What T* says about ``T = 1``: over-confident (T* > 1: flattening helps), under-confident
    (T* < 1), or close to calibrated (within :data:`CLOSE`)."""
    if abs(cal.t_star - 1.0) <= CLOSE:
        return "close to calibrated at T = 1"
    return "over-confident at T = 1" if cal.t_star > 1 else "under-confident at T = 1"


def calibration_results(study: CalibrationStudy) -> dict[str, Any]:
    """Every number of a study as JSON-ready data (NaN as null)."""
    cal = study.calibration
    data: dict[str, Any] = {
        "settings": study.settings, "timing": study.timing,
        "calibration": None if cal is None else {
            **{k: v for k, v in asdict(cal).items() if k not in ("at_one", "at_t_star")},
            "direction": direction(cal), "at_one": asdict(cal.at_one),
            "at_t_star": asdict(cal.at_t_star)},
        "human_cross_entropy": study.human_cross_entropy,
        "samples": [asdict(s) for s in study.samples],
        "t_match": study.t_match, "t_match_note": study.t_match_note,
    }
    clean: dict[str, Any] = _no_nan(data)
    return clean


def _no_nan(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else (str(value) if math.isinf(value) else value)
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def plot_calibration(study: CalibrationStudy, path: Path) -> Path:
    """Four panels: NLL(T) of the human text with T = 1, T* and the matching sampling T
    marked; the samples' cross-entropy against their temperature beside the human text's;
    the reliability diagrams at T = 1 and at T*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = study.calibration
    if cal is None:
        raise TempscopeError("the study is not complete: rerun the same command to finish it")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    ax = axes[0][0]
    ts, nll = zip(*cal.curve, strict=True)
    ax.plot(ts, nll, "o-", color="#3b7dd8", ms=4, label="NLL(T) of the human text")
    ax.axvline(1.0, color="#777777", ls=":", label="T = 1")
    ax.axvline(cal.t_star, color="#e4572e", label=f"T* = {cal.t_star:.3f}")
    if study.t_match is not None:
        ax.axvline(study.t_match, color="#2a9d8f", ls="--",
                   label=f"samples match the text: T = {study.t_match:.2f}")
    ax.set_xscale("log")
    ticks = [0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="temperature T (log scale)", ylabel="mean NLL, nats per token",
           title="Which T predicts the human text best")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    if study.samples:
        ax.plot([s.temperature for s in study.samples],
                [s.cross_entropy for s in study.samples], "o-", color="#8e44ad",
                label="samples at T, scored at T = 1")
    ax.axhline(study.human_cross_entropy, color="#000000", ls="--", label="human text")
    ax.axvline(cal.t_star, color="#e4572e", label="T*")
    if study.t_match is not None:
        ax.axvline(study.t_match, color="#2a9d8f", ls="--", label="match")
    ax.set(xlabel="sampling temperature", ylabel="cross-entropy, nats per token",
           title="Which sampling T gives text as surprising as the human's")
    ax.legend(fontsize=8)
    for ax, rep, name in ((axes[1][0], cal.at_one, "T = 1"),
                          (axes[1][1], cal.at_t_star, f"T* = {cal.t_star:.3f}")):
        _reliability(ax, rep, name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _reliability(ax: Any, rep: TemperatureReport, name: str) -> None:
    width = rep.bins[0].high - rep.bins[0].low
    full = [b for b in rep.bins if b.count]
    ax.bar([b.low for b in full], [b.accuracy for b in full], width=width, align="edge",
           color="#3b7dd8", edgecolor="white", label="accuracy (top-1 right)")
    ax.plot([b.confidence for b in full], [b.accuracy for b in full], "o", color="#e4572e",
            ms=4, label="(mean confidence, accuracy)")
    ax.plot([0, 1], [0, 1], color="#555555", ls=":", label="perfect calibration")
    for b in full:
        ax.annotate(str(b.count), (b.low + width / 2, 0.01), ha="center", fontsize=6,
                    color="#333333", rotation=90)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-1 confidence", ylabel="accuracy",
           title=f"Reliability at {name}: ECE {rep.ece:.3f}, Brier {rep.brier:.3f}")
    ax.legend(fontsize=7, loc="upper left")


def write_calibration_report(study_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.md``, ``report.html``, ``results.json`` and the figure into the study
    directory; returns the HTML's path."""
    import jinja2

    root = Path(study_dir)
    study = load_calibration(root)
    if study.calibration is None:
        raise TempscopeError(f"{root}: the calibration study is not complete; rerun the same "
                             "command to finish it")
    figure = plot_calibration(study, root / "figures" / "calibration.png")
    results = calibration_results(study)
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    cal = study.calibration
    rows = [("T = 1", cal.at_one), ("T*", cal.at_t_star)]
    s = study.settings
    text = (s["text"]["title"] + f" (PyPI `{s['text']['package']}`)" if isinstance(s["text"], dict)
            else ", ".join(f"`{t['path']}`" for t in s["text"]))
    context = {"s": s, "cal": cal, "study": study, "text": text, "guo": GUO,
               "direction": direction(cal), "seconds": sum(r["seconds"] for r in study.timing),
               "table": [[name, f"{r.temperature:.3f}", f"{r.nll:.4f}", f"{math.exp(r.nll):.2f}",
                          f"{r.ece:.4f}", f"{r.brier:.4f}", f"{r.accuracy:.3f}",
                          f"{r.confidence:.3f}"] for name, r in rows],
               "header": ["", "T", "NLL (nats/token)", "perplexity", f"ECE ({cal.bins} bins)",
                          "Brier", "top-1 accuracy", "mean confidence"]}
    context.update(_sentences(study, cal))
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True)
    (root / "report.md").write_text(env.from_string(_MARKDOWN).render(**context),
                                    encoding="utf-8")
    html = jinja2.Environment(autoescape=True).from_string(_HTML).render(
        **context, figure=base64.b64encode(figure.read_bytes()).decode("ascii"))
    (root / "report.html").write_text(html, encoding="utf-8")
    return root / "report.html"


def _sentences(study: CalibrationStudy, cal: Calibration) -> dict[str, str]:
    """The report's longer sentences, shared by the markdown and the HTML."""
    s = study.settings
    if cal.at_edge:
        where = (f" (the minimizer lies {cal.at_edge} the grid {s['grid'][0]:.2f}–"
                 f"{s['grid'][-1]:.2f}: shown at its edge)")
    else:
        where = (f" (within ±{cal.t_star_error:.1e} of the exact minimizer; bracketed by the "
                 f"grid points {cal.bracket[0]:.3f} and {cal.bracket[1]:.3f})")
    drop = 100 * (cal.at_one.nll - cal.at_t_star.nll) / cal.at_one.nll
    t_star = (f"**T\\* = {cal.t_star:.3f}**{where}: the model is **{direction(cal)}** on this "
              f"text. NLL at T = 1 {cal.at_one.nll:.4f}, at T\\* {cal.at_t_star.nll:.4f} nats "
              f"per token ({drop:.2f} % lower).")
    measured = ", ".join(f"T = {x.temperature:g}: {x.cross_entropy:.3f}" for x in study.samples)
    samples = (f"Sampling: the human text's cross-entropy over the first {s['sample_tokens']} "
               f"scored tokens is {study.human_cross_entropy:.3f} nats per token; the samples' "
               f"(under the model at T = 1): {measured or 'none yet'}. ")
    if study.t_match is not None:
        samples += (f"Samples are as surprising as the human text at **T ≈ "
                    f"{study.t_match:.2f}** ({study.t_match_note}), beside T\\* = "
                    f"{cal.t_star:.3f}.")
    else:
        samples += f"Matching sampling temperature: {study.t_match_note}."
    curve = "; ".join(f"{t:.3f}: {v:.4f}" for t, v in cal.curve)
    return {"t_star_text": t_star, "samples_text": samples, "curve_text": curve,
            "temps": ", ".join(f"{t:g}" for t in s["sample_temperatures"])}


_MARKDOWN = """\
## Measured on {{ s.model }} ({{ s.engine }})

{{ s.prompts }} passages of {{ text }}: each passage's first whole words within
{{ s.prompt_tokens }} tokens are context, the next {{ s.max_tokens }} human tokens are scored
({{ cal.positions }} tokens in all); {{ cal.bins }} equal-width confidence bins; samples:
{{ s.sample_tokens }} tokens after every prompt at each of T = {{ temps }}, seed {{ s.seed }}.
Run time: {{ "%.0f"|format(seconds) }} s in {{ study.timing|length }} run(s).

| {{ header|join(" | ") }} |
|{% for h in header %} --- |{% endfor %}
{% for row in table %}| {{ row|join(" | ") }} |
{% endfor %}
{{ t_star_text }}

{{ samples_text }}

NLL(T), exact at each point: {{ curve_text }}.

![NLL vs T, samples' cross-entropy, reliability at T = 1 and T*](figures/calibration.png)
"""

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Calibration of {{ s.model }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; } th { background: #f2f2f2; }
.meta { color: #555; font-size: 13px; } img { max-width: 100%; border: 1px solid #eee; }
</style></head><body>
<h1>Calibration of {{ s.model }} ({{ s.engine }})</h1>
<p class="meta">{{ s.prompts }} passages of {{ text }}; {{ cal.positions }} scored tokens;
{{ cal.bins }} equal-width bins; run time {{ "%.0f"|format(seconds) }} s. Method: {{ guo }}.</p>
<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in table %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
<p><b>T* = {{ "%.3f"|format(cal.t_star) }}</b>{% if cal.at_edge %} (outside the grid:
{{ cal.at_edge }}){% endif %}: {{ direction }}. Human cross-entropy
{{ "%.3f"|format(study.human_cross_entropy) }} nats per token;
{% if study.t_match is not none %}samples match it at T ≈ {{ "%.2f"|format(study.t_match) }}
({{ study.t_match_note }}).{% else %}matching sampling temperature: {{ study.t_match_note }}.
{% endif %}</p>
<img alt="NLL vs T, samples' cross-entropy, reliability diagrams"
     src="data:image/png;base64,{{ figure }}">
</body></html>
"""
