"""The sweep report: figures (matplotlib, headless) and one self-contained HTML page.

:func:`write_report` reads a sweep directory and writes, beside it::

    figures/entropy.png      entropy and effective vocabulary vs temperature
    figures/frontier.png     diversity (distinct-2) vs coherence, one labelled curve per config
    figures/first_step.png   the first token's distribution at each temperature
    figures/coherence.png    mean log-prob (model, and judge if any) vs temperature, with CIs
    report.html              the story in numbers, the figures (base64, works offline), tables

The story is computed, not written by hand: :func:`coherence_break` finds, per config, the first
temperature at which the mean log-probability per token falls more than ``threshold`` nats below
its value at the lowest temperature of the sweep (``threshold = 1`` nat: each token about
``e = 2.7`` times less likely than the near-greedy text).
"""

from __future__ import annotations

import base64
import math
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
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

DEFAULT_THRESHOLD = 1.0  # nats per token below the lowest-temperature coherence
COLORS = ["#3b7dd8", "#e4572e", "#2a9d8f", "#8e44ad", "#f4a261", "#555555"]


@dataclass(frozen=True)
class CoherenceBreak:
    """Where the coherence of one config falls off, in numbers."""

    config: str
    metric: str  # "mean_logprob" (the model itself) or "judge_logprob"
    baseline_temperature: float  # the lowest temperature swept
    baseline: float  # mean log-prob per token there
    coherent_up_to: float  # the highest temperature before the break (all of them if none)
    break_temperature: float | None  # the first temperature below baseline - threshold
    value_at_break: float | None
    threshold: float


def coherence_break(summary: pd.DataFrame, config: str, *, metric: str = "mean_logprob",
                    threshold: float = DEFAULT_THRESHOLD) -> CoherenceBreak | None:
    """First temperature whose mean ``metric`` is below ``baseline - threshold``.

    ``baseline`` is the metric at the lowest temperature of the sweep. Returns ``None`` when
    the config has no finite value of ``metric`` (e.g. no judge).

    Args:
        summary: :func:`tempscope.study.results.summary_table` output.
        config: which config.
        metric: ``"mean_logprob"`` or ``"judge_logprob"``.
        threshold: nats per token; must be > 0.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0 nats per token, got {threshold!r}")
    rows = summary[(summary["config"] == config) & (summary["metric"] == metric)]
    rows = rows[rows["estimate"].notna()].sort_values("temperature")
    if rows.empty:
        return None
    temps = rows["temperature"].tolist()
    values = rows["estimate"].tolist()
    baseline = values[0]
    coherent = temps[0]
    for t, v in zip(temps, values, strict=True):
        if v < baseline - threshold:
            return CoherenceBreak(config, metric, temps[0], baseline, coherent, t, v, threshold)
        coherent = t
    return CoherenceBreak(config, metric, temps[0], baseline, coherent, None, None, threshold)


def steepest_fall(summary: pd.DataFrame, config: str, *, metric: str = "mean_logprob"
                  ) -> tuple[float, float, float, float] | None:
    """The neighbouring temperatures ``(t0, t1, value0, value1)`` between which ``metric``
    falls fastest per unit of temperature, ``(v0 - v1) / (t1 - t0)``; ``None`` if it never
    falls (or there are fewer than two temperatures)."""
    rows = summary[(summary["config"] == config) & (summary["metric"] == metric)]
    rows = rows[rows["estimate"].notna()].sort_values("temperature")
    pts = list(zip(rows["temperature"], rows["estimate"], strict=True))
    best: tuple[float, float, float, float] | None = None
    rate = 0.0
    for (t0, v0), (t1, v1) in pairwise(pts):
        if (v0 - v1) / (t1 - t0) > rate:
            rate = (v0 - v1) / (t1 - t0)
            best = (float(t0), float(t1), float(v0), float(v1))
    return best


def story(summary: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD,
          judge: str | None = None) -> list[str]:
    """The report's findings as sentences, every claim a number from ``summary``."""
    lines: list[str] = []

    def value(config: str, t: float, metric: str) -> float:
        hit = summary[(summary["config"] == config) & (summary["temperature"] == t)
                      & (summary["metric"] == metric)]["estimate"]
        return float(hit.iloc[0]) if len(hit) else math.nan

    for config in dict.fromkeys(summary["config"]):
        temps = sorted(set(summary[summary["config"] == config]["temperature"]))
        lo, hi = temps[0], temps[-1]
        for metric, who in (("mean_logprob", "the model itself"),
                            ("judge_logprob", f"the judge ({judge})")):
            b = coherence_break(summary, config, metric=metric, threshold=threshold)
            if b is None:
                continue
            head = f"[{config}] Coherence under {who}: {b.baseline:.2f} nats/token at " \
                   f"T = {b.baseline_temperature:g}"
            if b.break_temperature is None or b.value_at_break is None:
                lines.append(f"{head}; it stays within {threshold:g} nats of that up to "
                             f"T = {hi:g} ({value(config, hi, metric):.2f}): no break in this "
                             "range.")
            else:
                drop = b.baseline - b.value_at_break
                lines.append(
                    f"{head}. Coherent up to T = {b.coherent_up_to:g}; it breaks at "
                    f"T = {b.break_temperature:g}, where it falls to {b.value_at_break:.2f} "
                    f"({drop:.2f} nats below, each token {math.exp(drop):.1f}x less likely)"
                    + (f" and reaches {value(config, hi, metric):.2f} at T = {hi:g}."
                       if hi != b.break_temperature else ".")
                )
            fall = steepest_fall(summary, config, metric=metric)
            if fall is not None:
                t0, t1, v0, v1 = fall
                lines.append(f"[{config}] The steepest fall under {who} is between T = {t0:g} "
                             f"and T = {t1:g}: from {v0:.2f} to {v1:.2f} nats/token.")

        def v(t: float, metric: str, fmt: str, config: str = config) -> str:
            x = value(config, t, metric)
            return "n/a" if math.isnan(x) else format(x, fmt)

        lines.append(
            f"[{config}] Entropy of the distribution sampled from rises from "
            f"{v(lo, 'entropy', '.2f')} nats at T = {lo:g} to {v(hi, 'entropy', '.2f')} at "
            f"T = {hi:g}: an effective vocabulary of {v(lo, 'effective_vocab', '.1f')} to "
            f"{v(hi, 'effective_vocab', '.0f')} tokens per step. The model's own entropy along "
            f"the text goes from {v(lo, 'raw_entropy', '.2f')} to {v(hi, 'raw_entropy', '.2f')}"
            " nats: the higher it climbs, the less the model knows where its own text is going."
        )
        lines.append(
            f"[{config}] Diversity across samples (distinct-2) goes from "
            f"{v(lo, 'distinct_2', '.2f')} at T = {lo:g} to {v(hi, 'distinct_2', '.2f')} at "
            f"T = {hi:g}; self-BLEU from {v(lo, 'self_bleu', '.2f')} to "
            f"{v(hi, 'self_bleu', '.2f')}; repeated bigrams within a sample from "
            f"{v(lo, 'repetition', '.0%')} to {v(hi, 'repetition', '.0%')}."
        )
    return lines


# ---------------------------------------------------------------------------------- figures


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(ax: Any, summary: pd.DataFrame, metric: str, *, label_configs: bool = True) -> bool:
    drawn = False
    for i, config in enumerate(dict.fromkeys(summary["config"])):
        rows = summary[(summary["config"] == config) & (summary["metric"] == metric)]
        rows = rows[rows["estimate"].notna()].sort_values("temperature")
        if rows.empty:
            continue
        color = COLORS[i % len(COLORS)]
        ax.plot(rows["temperature"], rows["estimate"], "o-", color=color,
                label=str(config) if label_configs else None)
        ax.fill_between(rows["temperature"], rows["low"], rows["high"], color=color, alpha=0.2)
        drawn = True
    return drawn


def plot_entropy(summary: pd.DataFrame, path: Path) -> Path:
    """Entropy (sampled-from and the model's own) and effective vocabulary vs temperature."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    _curve(left, summary, "entropy")
    for i, config in enumerate(dict.fromkeys(summary["config"])):
        rows = summary[(summary["config"] == config) & (summary["metric"] == "raw_entropy")]
        rows = rows.sort_values("temperature")
        left.plot(rows["temperature"], rows["estimate"], "--", color=COLORS[i % len(COLORS)],
                  label=f"{config}: model's own (T = 1)")
    left.set(xlabel="temperature", ylabel="entropy per step (nats)",
             title="Entropy of the distribution sampled from")
    left.legend(fontsize=8)
    if _curve(right, summary, "effective_vocab"):  # a remote sweep has no entropies
        right.set_yscale("log")
        right.legend(fontsize=8)
    right.set(xlabel="temperature", ylabel="exp(entropy), tokens",
              title="Effective vocabulary per step")
    return _save(fig, path)


def plot_coherence(summary: pd.DataFrame, path: Path, *, threshold: float) -> Path:
    """Mean log-prob per token under the model (and the judge) vs temperature, 95% CIs."""
    plt = _plt()
    has_judge = bool(summary[summary["metric"] == "judge_logprob"]["estimate"].notna().any())
    metrics = ["mean_logprob", "judge_logprob"] if has_judge else ["mean_logprob"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        _curve(ax, summary, metric)
        # One dotted line per distinct break level (configs share it when T = 0 is greedy).
        levels: dict[float, list[str]] = {}
        for config in dict.fromkeys(summary["config"]):
            b = coherence_break(summary, str(config), metric=metric, threshold=threshold)
            if b is not None:
                levels.setdefault(round(b.baseline - threshold, 2), []).append(str(config))
        for level, names in levels.items():
            ax.axhline(level, color="#888888", ls=":", lw=1,
                       label=f"break level: lowest-T value - {threshold:g} ({', '.join(names)})")
        who = "the model" if metric == "mean_logprob" else "the judge"
        ax.set(xlabel="temperature", ylabel="mean log p(token), nats",
               title=f"Coherence under {who} (95% CI over prompts)")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_frontier(summary: pd.DataFrame, path: Path) -> Path:
    """Diversity (distinct-2) vs coherence (mean log-prob): one curve per config, each point
    labelled with its temperature; up and right is better."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    wide = summary.pivot_table(index=["config", "temperature"], columns="metric",
                               values="estimate").reset_index()
    for i, config in enumerate(dict.fromkeys(summary["config"])):
        rows = wide[wide["config"] == config].sort_values("temperature")
        color = COLORS[i % len(COLORS)]
        ax.plot(rows["distinct_2"], rows["mean_logprob"], "o-", color=color, label=str(config))
        for _, r in rows.iterrows():
            ax.annotate(f"T={r['temperature']:g}", (r["distinct_2"], r["mean_logprob"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=8, color=color)
    ax.set(xlabel="diversity: distinct-2 across samples",
           ylabel="coherence: mean log p(token), nats",
           title="Diversity vs coherence, one curve per config")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_first_step(records: list[dict[str, Any]], path: Path) -> Path:
    """The first token's distribution at each temperature, for the first prompt and config:
    the ten likeliest tokens (same order in every panel) and the rest of the mass."""
    from tempscope.report.plots import Panel, plot_panels

    first = [r for r in records if r["prompt_index"] == records[0]["prompt_index"]
             and r["config"] == records[0]["config"] and r["sample_index"] == 0]
    first.sort(key=lambda r: float(r["temperature"]))
    raw: dict[int, tuple[str, float]] = {}
    for r in first:
        for a in r["first_top"]:
            raw[a["token_id"]] = (a["text"], a["raw_prob"])
    order = sorted(raw, key=lambda k: -raw[k][1])[:10]
    labels = [repr(raw[k][0])[1:-1].replace(" ", "␣") or "∅" for k in order] + ["(rest)"]
    panels = []
    for r in first:
        probs = {a["token_id"]: a["prob"] for a in r["first_top"]}
        shown = [probs.get(k, 0.0) for k in order]
        panels.append(Panel(f"T = {float(r['temperature']):g}", labels,
                            [*shown, max(0.0, 1.0 - sum(shown))]))
    prompt = first[0]["prompt"] if first else ""
    return plot_panels(panels, path, suptitle=f"First token after {prompt!r}")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


# ------------------------------------------------------------------------------------- HTML


def write_report(run_dir: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
                 threshold: float = DEFAULT_THRESHOLD, examples: int = 4) -> Path:
    """Write the figures and ``report.html`` for a sweep directory; returns the HTML's path.

    Args:
        run_dir: a directory written by :func:`tempscope.study.grid.sweep` (``out=``).
        out: the HTML file; default ``run_dir/report.html`` (figures go beside it).
        threshold: nats per token below the lowest-temperature coherence that count as broken.
        examples: how many prompts the example table shows.
    """
    import jinja2

    from tempscope.errors import TempscopeError
    from tempscope.study.grid import read_manifest, read_records
    from tempscope.study.results import cell_table, samples_frame, summary_table

    run = Path(run_dir)
    manifest = read_manifest(run)
    records, _ = read_records(run, n=int(manifest["n"]))
    if not records:
        raise TempscopeError(f"{run} has no complete cells yet: let `tempscope sweep` finish at "
                             "least one batch, then rerun the report")
    samples = samples_frame(records)
    order = {name: i for i, name in enumerate(manifest["configs"])}  # as the user listed them
    summary = summary_table(cell_table(samples)).sort_values(
        ["config", "temperature"], key=lambda col: col.map(order) if col.name == "config" else col,
        kind="stable",
    )
    html_path = Path(out) if out is not None else run / "report.html"
    fig_dir = html_path.parent / "figures"
    figures = [
        ("Coherence vs temperature", plot_coherence(summary, fig_dir / "coherence.png",
                                                    threshold=threshold)),
        ("Entropy and effective vocabulary", plot_entropy(summary, fig_dir / "entropy.png")),
        ("Diversity vs coherence frontier", plot_frontier(summary, fig_dir / "frontier.png")),
    ]
    if any(r["first_top"] for r in records):  # remote sweeps have no token ids to plot by
        figures.append(("First-step distribution",
                        plot_first_step(records, fig_dir / "first_step.png")))
    template = jinja2.Environment(autoescape=True).from_string(_TEMPLATE)
    html = template.render(
        manifest=manifest, run=str(run), threshold=threshold,
        cells=len(samples.groupby(["prompt_index", "config", "temperature"])),
        samples=len(samples),
        model_label=_label(manifest["model"]),
        story=story(summary, threshold=threshold, judge=_label(manifest.get("judge"))),
        figures=[(title, base64.b64encode(p.read_bytes()).decode("ascii"))
                 for title, p in figures],
        table=_summary_rows(summary), examples=_examples(samples, examples),
        has_judge=bool(samples["judge_logprob"].notna().any()),
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(html, encoding="utf-8")
    return html_path


def _label(name: str | None) -> str | None:
    """A model's short name: a path's last part (``/x/gemma.gguf`` -> ``gemma.gguf``)."""
    return None if name is None else Path(name).name or name


def _summary_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    def cell(metric: str, group: pd.DataFrame, fmt: str) -> str:
        hit = group[group["metric"] == metric]
        if hit.empty or not math.isfinite(float(hit["estimate"].iloc[0])):
            return "–"
        r = hit.iloc[0]
        text = format(float(r["estimate"]), fmt)
        if r["prompts"] > 1 and float(r["low"]) != float(r["high"]):
            text += f"\n[{format(float(r['low']), fmt)}, {format(float(r['high']), fmt)}]"
        return text

    rows = []
    for (config, t), group in summary.groupby(["config", "temperature"], sort=False):
        rows.append({
            "config": config, "temperature": f"{t:g}",
            "logprob": cell("mean_logprob", group, ".2f"),
            "judge": cell("judge_logprob", group, ".2f"),
            "entropy": cell("entropy", group, ".2f"),
            "vocab": cell("effective_vocab", group, ".1f"),
            "rank": cell("mean_rank", group, ".2f"),
            "distinct2": cell("distinct_2", group, ".2f"),
            "self_bleu": cell("self_bleu", group, ".2f"),
            "edit": cell("edit_distance", group, ".2f"),
            "repetition": cell("repetition", group, ".2f"),
        })
    return rows


def _examples(samples: pd.DataFrame, prompts: int) -> list[dict[str, Any]]:
    """Sample 0 of each cell, for the first few prompts, by config and temperature."""
    out = []
    for pi in sorted(samples["prompt_index"].unique())[:prompts]:
        group = samples[(samples["prompt_index"] == pi) & (samples["sample_index"] == 0)]
        out.append({
            "prompt": str(group["prompt"].iloc[0]),
            "rows": [{"config": r["config"], "temperature": f"{r['temperature']:g}",
                      "text": r["text"], "logprob": f"{r['mean_logprob']:.2f}",
                      "finish": r["finish_reason"]}
                     for _, r in group.sort_values(["config", "temperature"]).iterrows()],
        })
    return out


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>tempscope sweep report: {{ model_label }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; white-space: pre; }
td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; max-width: 640px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.story li { margin: .4em 0; } .meta { color: #555; font-size: 13px; }
</style></head><body>
<h1>What temperature does to {{ model_label }}</h1>
<p class="meta">Sweep in <code>{{ run }}</code>: {{ manifest.prompts|length }} prompts,
configs {{ manifest.configs|list|join(", ") }}, temperatures
{{ manifest.temperatures|join(", ") }}, {{ manifest.n }} samples per cell,
model <code>{{ manifest.model }}</code>,
{{ manifest.max_new_tokens }} new tokens, seed {{ manifest.seed }}{% if manifest.judge %},
judge {{ manifest.judge }}{% endif %}. {{ cells }} cells, {{ samples }} samples.</p>
<h2>Findings</h2>
<ul class="story">{% for line in story %}<li>{{ line }}</li>{% endfor %}</ul>
<p class="meta">Coherence = mean log-probability per generated token under the model at T = 1
(higher is more plausible); "breaks" = first temperature more than {{ threshold }} nats/token
below the lowest temperature. Intervals: 95% bootstrap over prompts.</p>
{% for title, data in figures %}
<h2>{{ title }}</h2>
<figure><img alt="{{ title }}" src="data:image/png;base64,{{ data }}"></figure>
{% endfor %}
<h2>Numbers per config and temperature</h2>
<table><tr><th>config</th><th>T</th><th>log p / token</th>{% if has_judge %}<th>judge
log p / token</th>{% endif %}<th>entropy</th><th>eff. vocab</th><th>rank</th>
<th>distinct-2</th><th>self-BLEU</th><th>edit dist.</th><th>repetition</th></tr>
{% for r in table %}<tr><td>{{ r.config }}</td><td class="num">{{ r.temperature }}</td>
<td class="num">{{ r.logprob }}</td>{% if has_judge %}<td class="num">{{ r.judge }}</td>{% endif %}
<td class="num">{{ r.entropy }}</td><td class="num">{{ r.vocab }}</td>
<td class="num">{{ r.rank }}</td><td class="num">{{ r.distinct2 }}</td>
<td class="num">{{ r.self_bleu }}</td><td class="num">{{ r.edit }}</td>
<td class="num">{{ r.repetition }}</td></tr>{% endfor %}
</table>
<h2>Example samples</h2>
{% for ex in examples %}
<h3>{{ ex.prompt }}</h3>
<table><tr><th>config</th><th>T</th><th>continuation (sample 0)</th><th>log p / token</th>
<th>end</th></tr>
{% for r in ex.rows %}<tr><td>{{ r.config }}</td><td class="num">{{ r.temperature }}</td>
<td class="text">{{ r.text }}</td><td class="num">{{ r.logprob }}</td><td>{{ r.finish }}</td>
</tr>{% endfor %}
</table>
{% endfor %}
<p class="meta">Made by tempscope {{ manifest.tempscope }}.</p>
</body></html>
"""
