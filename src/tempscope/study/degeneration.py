"""The degeneration study: Table 1 of Holtzman et al. (2020) and mirostat's repetition curve
(Basu et al. 2021), reproduced on any model.

Every decoder of :data:`DECODERS` continues the same prompts (the first ~35 tokens of
public-domain passages, :mod:`tempscope.study.corpus`) for the same number of tokens, one seeded
sample per prompt; the human continuations of those passages are the reference. Each set of
texts gets the paper's four numbers and one more:

- perplexity under the generating model at ``T = 1``, pooled over all tokens of the set
  (:func:`~tempscope.study.metrics.text_perplexity`; generated text: the raw log-probs recorded
  while generating; human text: :func:`~tempscope.study.metrics.score_texts`, batched);
- Self-BLEU4 (:func:`~tempscope.study.metrics.self_bleu`: each text against all the others);
- Zipf coefficient of the pooled token frequencies
  (:func:`~tempscope.study.metrics.zipf_coefficient`);
- repetition %: texts that end in a loop (:func:`~tempscope.study.metrics.loop_rate`);
- observed cross-entropy per token in bits (:func:`~tempscope.study.metrics.cross_entropy`), the
  quantity mirostat steers; with it, within each text the share of repeated 4-grams.

Generation goes through :func:`tempscope.study.grid.sweep`, its batching and its resumable run
store: one sweep directory per decoder under ``out`` (``out/greedy``, ``out/top_k_40``, ...), plus
``human.json`` (the passages, their continuations and scores) and ``timing.json``. A batch
holds one decoder's rows only, so every row runs the same short sampler chain (a mixed batch
would run every decoder's samplers over every row). Rerunning with the same settings resumes;
other settings are refused. Where the engine knows its end-of-text tokens (a local model), they
get a logit bias of -100, so every generation has the full length, as in the paper
(perplexities use the raw log-probs, which no bias touches). :mod:`tempscope.report.degeneration`
turns a study directory into tables, findings and the figure.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempscope.errors import TempscopeError
from tempscope.sampling.params import SamplingParams

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend
    from tempscope.engine.generator import Generator
    from tempscope.engine.remote.client import RemoteClient
    from tempscope.study.grid import SweepProgress

__all__ = [
    "DECODERS",
    "Decoder",
    "HUMAN",
    "PaperRow",
    "SetMetrics",
    "check_study",
    "load_study",
    "run_degeneration",
    "set_metrics",
]

HUMAN_FILE = "human.json"
TIMING_FILE = "timing.json"
FORMAT = "tempscope-degeneration/1"
NGRAM = 4  # the within-text repetition of the mirostat curve: share of repeated 4-grams
EOS_BIAS = -100.0  # the strongest logit bias SamplingParams takes: EOS is never drawn


@dataclass(frozen=True)
class PaperRow:
    """One row of Holtzman et al. (2020) Table 1; ``None`` where the paper has no number."""

    perplexity: float | None
    self_bleu4: float | None
    zipf: float | None
    repetition_pct: float | None


@dataclass(frozen=True)
class Decoder:
    """A decoding configuration of the study."""

    name: str  # key in the run store and the tables
    label: str  # as a reader knows it
    params: SamplingParams
    paper: PaperRow | None = None  # None: beyond the paper


HUMAN = "human"
# Table 1 of the paper (arXiv 1904.09751 v2, page 6); docs/degeneration.md says how it was
# checked.
HUMAN_PAPER = PaperRow(12.38, 0.31, 0.93, 0.28)
DECODERS: tuple[Decoder, ...] = (
    Decoder("greedy", "greedy", SamplingParams(temperature=0),
            PaperRow(1.50, 0.50, 1.00, 73.66)),
    Decoder("pure", "pure sampling (T = 1)", SamplingParams(temperature=1.0),
            PaperRow(22.73, 0.28, 0.93, 0.22)),
    Decoder("top_k_40", "top-k 40", SamplingParams(top_k=40), PaperRow(6.88, 0.39, 0.96, 0.78)),
    Decoder("top_k_640", "top-k 640", SamplingParams(top_k=640),
            PaperRow(13.82, 0.32, 0.96, 0.28)),
    Decoder("top_k_40_t0.7", "top-k 40, T = 0.7", SamplingParams(temperature=0.7, top_k=40),
            PaperRow(3.48, 0.44, 1.00, 8.86)),
    Decoder("nucleus_0.95", "nucleus p = 0.95", SamplingParams(top_p=0.95),
            PaperRow(13.13, 0.32, 0.95, 0.36)),
    Decoder("min_p_0.1", "min-p 0.1", SamplingParams(min_p=0.1)),
    Decoder("top_n_sigma_1", "top-n-σ 1", SamplingParams(top_n_sigma=1.0)),
    Decoder("min_p_0.1_t1.5", "min-p 0.1, T = 1.5", SamplingParams(temperature=1.5, min_p=0.1)),
    Decoder("mirostat_3", "mirostat τ = 3", SamplingParams(mirostat_tau=3.0)),
)


def _temperature(params: SamplingParams) -> float:
    return 1.0 if params.temperature is None else float(params.temperature)


def sweep_dir(out: Path, decoder: str) -> Path:
    """Where the sweep of one decoder lives."""
    return out / decoder


def check_study(prompts: int, max_new_tokens: int, prompt_tokens: int,
                batch_rows: int) -> list[str]:
    """Check the settings and the corpus before any model is loaded; returns the candidate
    passages. Raises ``ValueError`` naming a bad setting, :class:`TempscopeError` when the
    corpus is missing or too small."""
    from tempscope.study.corpus import passages

    for what, value in (("prompts", prompts), ("max_new_tokens", max_new_tokens),
                        ("prompt_tokens", prompt_tokens), ("batch_rows", batch_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a whole number >= 1, got {value!r}")
    texts = passages(prompt_tokens + max_new_tokens)
    if len(texts) < prompts:
        raise TempscopeError(
            f"the corpus has {len(texts)} passages of at least {prompt_tokens + max_new_tokens} "
            f"words, fewer than the {prompts} prompts asked for: ask for at most {len(texts)} "
            "prompts, or fewer new tokens")
    return texts


def run_degeneration(
    model: Generator | Backend | RemoteClient | str | None,
    *,
    out: str | os.PathLike[str],
    prompts: int = 100,
    max_new_tokens: int = 128,
    prompt_tokens: int = 35,
    seed: int = 0,
    batch_rows: int = 64,
    tokenizer: Backend | str | None = None,
    progress: Callable[[str, SweepProgress], None] | None = None,
) -> Path:
    """Run (or resume) the study into ``out``; returns ``out`` as a path.

    Args:
        model: a loaded model, a name/path for :func:`tempscope.engine.loader.load_model`
            (``None`` = the embedded default), a
            :class:`tempscope.engine.remote.client.RemoteClient`, or any
            :class:`~tempscope.engine.generator.Generator`.
        out: the study directory (created; rerun to resume).
        prompts: passages, one sample per passage and decoder.
        max_new_tokens: tokens per generation and per human continuation.
        prompt_tokens: prompt length cap, whole words.
        seed: base seed of every sampled row.
        batch_rows: rows decoded together (several prompts per engine call).
        tokenizer: the model whose tokens cut the passages when ``model`` is a server
            (default the embedded model; :attr:`Generator.tokenizer
            <tempscope.engine.generator.Generator.tokenizer>`); a local ``model`` uses its own.
        progress: called with the decoder's name and its sweep's progress.
    """
    from tempscope.engine.generator import as_generator
    from tempscope.study.corpus import human_references
    from tempscope.study.grid import sweep

    texts = check_study(prompts, max_new_tokens, prompt_tokens, batch_rows)
    gen = as_generator(model, tokenizer=tokenizer)
    cutter = gen.tokenizer
    root = Path(out)
    start = time.monotonic()
    refs = human_references(cutter, texts, prompts, prompt_tokens=prompt_tokens,
                            continuation_tokens=max_new_tokens)
    settings = {"format": FORMAT, "model": gen.label, "tokenizer": cutter.name,
                "prompts": prompts, "prompt_tokens": prompt_tokens,
                "max_new_tokens": max_new_tokens, "seed": seed}
    _human(root, settings, refs, gen)
    tokens = 0
    for d in DECODERS:
        params = d.params
        if gen.eos_token_ids:
            params = params.model_copy(update={"logit_bias": dict.fromkeys(gen.eos_token_ids,
                                                                           EOS_BIAS)})
        seen = [0]  # tokens this decoder generated, from its last progress report

        def on_progress(p: SweepProgress, label: str = d.name, seen: list[int] = seen) -> None:
            seen[0] = p.tokens
            if progress is not None:
                progress(label, p)

        sweep(gen, [r.prompt for r in refs],
              [_temperature(params)], configs={d.name: params}, n=1,
              max_new_tokens=max_new_tokens, seed=seed, out=sweep_dir(root, d.name),
              batch_rows=batch_rows, progress=on_progress)
        tokens += seen[0]
    log_time(root, time.monotonic() - start, tokens_generated=tokens, engine=gen.engine)
    return root


def _human(root: Path, settings: dict[str, Any], refs: Sequence[Any], gen: Generator) -> None:
    """Write ``human.json`` (passages, continuations, their scores where the engine can score
    given text) or check the one there."""
    path = root / HUMAN_FILE
    if path.exists():
        old = read_json(path)
        differ = [k for k in settings if old.get("settings", {}).get(k) != settings[k]]
        if differ:
            detail = "; ".join(f"{k}: was {old.get('settings', {}).get(k)!r}, now "
                               f"{settings[k]!r}" for k in differ)
            raise TempscopeError(f"{root} holds a degeneration study with other settings "
                                 f"({detail}); rerun with the same settings to resume it, or "
                                 "give another --out directory")
        return
    scores = gen.score_texts([r.prompt for r in refs], [r.continuation for r in refs])
    from tempscope.study.corpus import CORPUS

    data = {"settings": settings, "corpus": CORPUS, "passages": [
        {"passage": r.passage, "prompt": r.prompt, "continuation": r.continuation,
         "token_ids": r.token_ids,
         "logprob": None if scores is None else scores[i].logprob,
         "n_scored": None if scores is None else scores[i].n_tokens}
        for i, r in enumerate(refs)]}
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def log_time(root: Path, seconds: float, **info: Any) -> None:
    """Append one run's wall time (and ``info``, e.g. the engine) to a study's timing file."""
    path = root / TIMING_FILE
    runs = read_json(path).get("runs", []) if path.exists() else []
    runs.append({"finished": datetime.now(UTC).isoformat(timespec="seconds"),
                 "seconds": round(seconds, 1), **info})
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n", encoding="utf-8")


def read_study(root: Path, name: str, study: str) -> dict[str, Any]:
    """The file ``name`` that starts a ``study`` directory (``tempscope study <study>``), read,
    or a :class:`TempscopeError` that says how to make one."""
    if not (root / name).exists():
        raise TempscopeError(f"{root} is not a {study} study (no {name}): run "
                             f"`tempscope study {study} --out DIR` first")
    return read_json(root / name)


def read_json(path: Path) -> dict[str, Any]:
    """A study file's JSON object, or a :class:`TempscopeError` that says to start over."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TempscopeError(f"cannot read {path} ({exc}): delete the study directory and run "
                             "it again") from None
    if not isinstance(data, dict):
        raise TempscopeError(f"{path} is damaged: delete the study directory and run it again")
    return data


# ------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class SetMetrics:
    """The numbers of one set of texts (one decoder's, or the human continuations)."""

    name: str
    label: str
    texts: int
    tokens: int
    perplexity: float  # exp of the pooled cross-entropy, nats; NaN when not scored
    cross_entropy_bits: float  # pooled, bits per token
    self_bleu4: float
    zipf: float
    repetition_pct: float  # texts ending in a loop, %
    early_stops: int  # texts shorter than the budget (an end-of-text token, remote only)
    per_text: list[tuple[float, float]]  # (cross-entropy bits, repeated-4-gram share) per text
    paper: PaperRow | None
    refused: list[str]  # sampler settings a remote server refused (not applied)


def set_metrics(name: str, label: str, texts: Sequence[str],
                units: Sequence[Sequence[Any]], scores: Sequence[tuple[float, int]], *,
                budget: int, paper: PaperRow | None = None,
                refused: Sequence[str] = ()) -> SetMetrics:
    """All the study's numbers for one set of texts.

    Args:
        texts: ``(N,)`` the texts (continuations only).
        units: ``(N, ~L)`` their token ids, or token texts where ids are unknown (remote).
        scores: ``(N,)`` ``(sum of log p(token) at T = 1, tokens scored)`` per text; a NaN
            sum (not scored) makes the perplexity and cross-entropy NaN.
        budget: the token budget; shorter texts count as early stops.
    """
    from tempscope.study.metrics import loop_rate, repetition, self_bleu, zipf_coefficient

    total = sum(s for s, _ in scores)
    count = sum(n for _, n in scores)
    ce_nats = -total / count if count and not math.isnan(total) else math.nan
    per_text = [(-s / n / math.log(2) if n else math.nan, repetition(u, NGRAM))
                for (s, n), u in zip(scores, units, strict=True)]
    return SetMetrics(
        name=name, label=label, texts=len(texts), tokens=sum(len(u) for u in units),
        perplexity=math.exp(ce_nats), cross_entropy_bits=ce_nats / math.log(2),
        self_bleu4=self_bleu(list(texts)), zipf=zipf_coefficient(units),
        repetition_pct=100.0 * loop_rate(units),
        early_stops=sum(len(u) < budget for u in units), per_text=per_text, paper=paper,
        refused=list(refused))


def load_study(out: str | os.PathLike[str]) -> tuple[dict[str, Any], list[SetMetrics]]:
    """A study directory's settings and its numbers: the human row first, then every decoder
    whose sweep is complete, in :data:`DECODERS` order."""
    from tempscope.study.grid import read_manifest, read_records

    root = Path(out)
    human = read_study(root, HUMAN_FILE, "degeneration")
    settings: dict[str, Any] = dict(human["settings"])
    budget = int(settings["max_new_tokens"])
    refs = human["passages"]
    human_scores = [(math.nan, 0) if r["logprob"] is None else
                    (float(r["logprob"]), int(r["n_scored"])) for r in refs]
    rows = [set_metrics(HUMAN, "human text", [r["continuation"] for r in refs],
                        [r["token_ids"] for r in refs], human_scores, budget=budget,
                        paper=HUMAN_PAPER)]
    for d in DECODERS:
        path = sweep_dir(root, d.name)
        if not (path / "manifest.json").exists():
            continue
        manifest = read_manifest(path)
        records, _ = read_records(path, n=1)
        mine = sorted(records, key=lambda r: int(r["prompt_index"]))
        if len(mine) < len(refs):
            continue  # not finished: resume to complete it
        rows.append(set_metrics(
            d.name, d.label, [r["text"] for r in mine],
            [r["token_ids"] or r["steps"]["token"] for r in mine],
            [(sum(r["steps"]["raw_logprob"]), len(r["steps"]["raw_logprob"])) for r in mine],
            budget=budget, paper=d.paper,
            refused=list((manifest.get("remote") or {}).get("ignored", []))))
    timing = read_json(root / TIMING_FILE) if (root / TIMING_FILE).exists() else {"runs": []}
    settings["timing"] = timing["runs"]
    settings["corpus"] = human.get("corpus", {})
    return settings, rows
