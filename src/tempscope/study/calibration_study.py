"""The calibration study: which temperature fits a model on real text (temperature scaling, Guo
et al. 2017), how calibrated its top-1 predictions are at ``T = 1`` and there, and where the
temperature whose *samples* look like the human text falls beside it.

Texts: the passages of the degeneration study (:mod:`tempscope.study.corpus`, Britannica 1911) or
any prose files, each cut in the model's own tokens into a prompt (the first whole words within
``prompt_tokens`` tokens) and the human continuation (the next ``max_tokens`` tokens). The
continuation tokens are scored with the prompt as context (:func:`tempscope.study.calibration.
score_text`): pass 1 at the grid, pass 2 at the T* it gives. Beside that, ``sample_tokens``
tokens are sampled after every prompt at each of ``sample_temperatures`` (seeded, one sample per
prompt and T, end-of-text banned as in the degeneration study) and their cross-entropy under
the model at ``T = 1`` is set against the human text's over the same positions: the sampling
temperature whose samples match the human cross-entropy.

On disk (``out``; rerunning the same command resumes, other settings are refused)::

    texts.json     the settings and every text's token ids and scored start
    scores.jsonl   one record per text and pass (its sums; pass 1 also its per-token NLL at
                   T = 1), appended and fsynced as each text is done
    samples/       the sampling sweep (:func:`tempscope.study.grid.sweep`'s resumable store)
    timing.json    the wall time of each run
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempscope.errors import TempscopeError
from tempscope.study.calibration import (
    BINS,
    GRID,
    Calibration,
    CalibrationSums,
    TStarSearch,
    find_t_star,
    score_text,
    summarize,
)
from tempscope.study.degeneration import log_time, read_json, read_study

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend

__all__ = [
    "SAMPLE_TEMPERATURES",
    "CalibrationStudy",
    "SampleSet",
    "check_calibration_study",
    "default_text_calibration",
    "load_calibration",
    "match_temperature",
    "run_calibration",
]

FORMAT = "tempscope-calibration/1"
TEXTS_FILE, SCORES_FILE, TIMING_FILE, SAMPLES_DIR = ("texts.json", "scores.jsonl",
                                                     "timing.json", "samples")
SAMPLE_TEMPERATURES = (0.6, 0.8, 1.0, 1.2, 1.5)
EOS_BIAS = -100.0  # as in the degeneration study: every sample has the full length


def file_passages(paths: Sequence[str | os.PathLike[str]], min_words: int) -> list[str]:
    """Passages of whole sentences (at least ``min_words`` words) from prose files, in order.

    Raises ``ValueError`` naming a file that is missing, not UTF-8 text, or gives none.
    """
    from tempscope.study.corpus import passages

    out: list[str] = []
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ValueError(f"--text {str(path)!r}: no such file; give a UTF-8 prose file"
                             ) from None
        except UnicodeDecodeError:
            raise ValueError(f"--text {str(path)!r} is not UTF-8 text; give a UTF-8 prose "
                             "file") from None
        found = passages(min_words, text=re.sub(r"\s+", " ", text).strip())
        if not found:
            raise ValueError(f"--text {str(path)!r} gives no passage of at least {min_words} "
                             "words of whole sentences: give a longer prose file, or lower "
                             "--max-tokens / --prompt-tokens")
        out += found
    return out


def check_calibration_study(prompts: int, max_tokens: int, prompt_tokens: int,
                            sample_tokens: int, text_files: Sequence[str] | None = None,
                            sample_temperatures: Sequence[float] = SAMPLE_TEMPERATURES
                            ) -> list[str]:
    """Check the settings and the text before any model loads; returns the candidate
    passages. ``ValueError`` names a bad setting; :class:`TempscopeError` says when the
    corpus is missing or too small."""
    from tempscope.study.calibration import check_temperatures
    from tempscope.study.corpus import passages

    for what, value in (("prompts", prompts), ("max_tokens", max_tokens),
                        ("prompt_tokens", prompt_tokens), ("sample_tokens", sample_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a whole number >= 1, got {value!r}")
    if sample_tokens > max_tokens:
        raise ValueError(f"sample_tokens ({sample_tokens}) must be at most max_tokens "
                         f"({max_tokens}): samples are held against that many human tokens")
    check_temperatures(sample_temperatures)
    words = prompt_tokens + max_tokens
    found = file_passages(text_files, words) if text_files else passages(words)
    if len(found) < prompts:
        raise TempscopeError(
            f"the text gives {len(found)} passages of at least {words} words, fewer than the "
            f"{prompts} prompts asked for: ask for at most {len(found)} prompts, or fewer tokens")
    return found


def run_calibration(
    model: Backend | str | None,
    *,
    out: str | os.PathLike[str],
    prompts: int = 24,
    max_tokens: int = 128,
    prompt_tokens: int = 35,
    sample_tokens: int = 48,
    sample_temperatures: Sequence[float] = SAMPLE_TEMPERATURES,
    seed: int = 0,
    text_files: Sequence[str] | None = None,
    bins: int = BINS,
    batch_rows: int = 64,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Run (or resume) the study into ``out``; returns ``out`` as a path.

    Args:
        model: a loaded model or a name/path for :func:`tempscope.engine.loader.load_model`
            (``None`` = the embedded default).
        out: the study directory (created; rerun to resume).
        prompts: passages scored and continued.
        max_tokens: human continuation tokens scored per passage.
        prompt_tokens: prompt length cap, whole words (the scored tokens' first context).
        sample_tokens: tokens sampled per prompt and sampling temperature.
        sample_temperatures: the temperatures sampled (one seeded sample per prompt each).
        seed: base seed of the samples.
        text_files: prose files to take the passages from (default: the Britannica
            passages).
        bins: confidence bins of ECE and the reliability diagrams.
        batch_rows: sampled rows decoded together.
        progress: called as ``progress(stage, done, total)``; stages ``grid``, ``T*``,
            ``samples``.
    """
    from tempscope.engine.loader import load_model
    from tempscope.sampling import SamplingParams
    from tempscope.study.corpus import CORPUS, human_references
    from tempscope.study.grid import sweep

    found = check_calibration_study(prompts, max_tokens, prompt_tokens, sample_tokens,
                                    text_files, sample_temperatures)
    lm = model if model is not None and not isinstance(model, str) else load_model(model)
    root = Path(out)
    started = time.monotonic()
    refs = human_references(lm, found, prompts, prompt_tokens=prompt_tokens,
                            continuation_tokens=max_tokens)
    source: Any = CORPUS if not text_files else [
        {"path": str(p), "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()}
        for p in text_files]
    settings = {"format": FORMAT, "model": lm.name, "engine": lm.engine, "prompts": prompts,
                "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
                "sample_tokens": sample_tokens, "sample_temperatures": list(sample_temperatures),
                "seed": seed, "bins": bins, "grid": list(GRID), "text": source}
    items: list[dict[str, Any]] = []
    for r in refs:
        ids = lm.encode(r.prompt) + list(r.token_ids)
        items.append({"passage": r.passage, "prompt": r.prompt, "continuation": r.continuation,
                      "ids": ids, "start": len(ids) - max_tokens})
    _write_texts(root, settings, items)
    grid, star, _ = _read_scores(root)
    for k, item in enumerate(items):
        if k not in grid:
            sums, nll = score_text(lm, item["ids"], item["start"], GRID, bins=bins)
            _append(root / SCORES_FILE, {"pass": "grid", "index": k, "sums": sums.to_dict(),
                                         "nll_t1": [round(x, 6) for x in nll]})
            grid[k] = sums
        if progress is not None:
            progress("grid", k + 1, len(items))
    found_t = find_t_star(sum(grid.values(), CalibrationSums.empty(GRID, bins)))
    star = {k: s for k, s in star.items() if s.temperatures == (found_t.temperature,)}
    for k, item in enumerate(items):
        if k not in star:
            sums, _ = score_text(lm, item["ids"], item["start"], [found_t.temperature],
                                 bins=bins)
            _append(root / SCORES_FILE, {"pass": "t_star", "index": k,
                                         "sums": sums.to_dict()})
        if progress is not None:
            progress("T*", k + 1, len(items))
    params = SamplingParams(logit_bias=dict.fromkeys(lm.eos_token_ids, EOS_BIAS)
                            if lm.eos_token_ids else None)

    def on_sample(p: Any) -> None:
        if progress is not None:
            progress("samples", p.cells_done, p.cells_total)

    sweep(lm, [r.prompt for r in refs], list(sample_temperatures), configs={"pure": params},
          n=1, max_new_tokens=sample_tokens, seed=seed, out=root / SAMPLES_DIR,
          batch_rows=batch_rows, progress=on_sample)
    log_time(root, time.monotonic() - started, engine=lm.engine)
    return root


# ------------------------------------------------------------------------------- the store


def _write_texts(root: Path, settings: dict[str, Any], items: list[dict[str, Any]]) -> None:
    path = root / TEXTS_FILE
    if path.exists():
        old = read_json(path).get("settings", {})
        differ = [k for k in settings if old.get(k) != json.loads(json.dumps(settings[k]))]
        if differ:
            detail = "; ".join(f"{k}: was {old.get(k)!r}, now {settings[k]!r}" for k in differ)
            raise TempscopeError(f"{root} holds a calibration study with other settings "
                                 f"({detail}); rerun with the same settings to resume it, or "
                                 "give another --out directory")
        return
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"settings": settings, "texts": items}, ensure_ascii=False)
                   + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_scores(root: Path) -> tuple[dict[int, CalibrationSums], dict[int, CalibrationSums],
                                      dict[int, list[float]]]:
    """Pass 1 and pass 2 sums and pass 1's per-token NLL by text index; a last line cut short
    by a kill is dropped (its text is scored again)."""
    path = root / SCORES_FILE
    grid: dict[int, CalibrationSums] = {}
    star: dict[int, CalibrationSums] = {}
    nll: dict[int, list[float]] = {}
    if not path.exists():
        return grid, star, nll
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[-1]:  # cut short: keep the complete lines only
        path.write_text("".join(line + "\n" for line in lines[:-1]), encoding="utf-8")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = json.loads(line)
            sums = CalibrationSums.from_dict(record["sums"])
            index = int(record["index"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise TempscopeError(f"{path}:{number} is not a score record: delete the study "
                                 "directory and run it again") from None
        if record.get("pass") == "grid":
            grid[index], nll[index] = sums, list(record.get("nll_t1", []))
        else:
            star[index] = sums
    return grid, star, nll


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SampleSet:
    """The samples at one sampling temperature, scored by the model at T = 1."""

    temperature: float
    samples: int
    tokens: int
    cross_entropy: float  # nats per token, under the model at T = 1 (raw log-probs)


@dataclass(frozen=True)
class CalibrationStudy:
    """A study directory read back: settings, the calibration, the sampling side."""

    settings: dict[str, Any]
    calibration: Calibration | None  # None until both passes are complete
    human_cross_entropy: float  # nats per token over the positions the samples cover
    samples: list[SampleSet]  # by temperature; only complete temperatures
    t_match: float | None  # the sampling T whose samples match the human cross-entropy
    t_match_note: str  # how t_match was found, or why there is none
    timing: list[dict[str, Any]]


def match_temperature(samples: Sequence[SampleSet], human: float) -> tuple[float | None, str]:
    """The sampling temperature where the samples' cross-entropy crosses the human text's:
    linear interpolation between the two sampled temperatures around the first crossing.

    >>> s = [SampleSet(0.5, 1, 1, 2.0), SampleSet(1.0, 1, 1, 3.0), SampleSet(1.5, 1, 1, 5.0)]
    >>> match_temperature(s, 2.5)[0]
    0.75
    """
    pts = sorted((s.temperature, s.cross_entropy) for s in samples
                 if not math.isnan(s.cross_entropy))
    if len(pts) < 2 or math.isnan(human):
        return None, "not measured: fewer than two sampled temperatures"
    for (t0, c0), (t1, c1) in pairwise(pts):
        if (c0 - human) * (c1 - human) <= 0 and c0 != c1:
            return t0 + (human - c0) * (t1 - t0) / (c1 - c0), \
                f"interpolated between T = {t0:g} and T = {t1:g}"
    side = "below" if pts[0][1] > human else "above"
    edge = pts[0][0] if side == "below" else pts[-1][0]
    return None, (f"{side} the sampled range: at T = {edge:g} the samples' cross-entropy is "
                  f"still {'above' if side == 'below' else 'below'} the human text's")


def load_calibration(out: str | os.PathLike[str]) -> CalibrationStudy:
    """Read a study directory back (complete or not)."""
    from tempscope.study.grid import read_records

    root = Path(out)
    data = read_study(root, TEXTS_FILE, "calibration")
    settings: dict[str, Any] = dict(data["settings"])
    n = len(data["texts"])
    grid, star, nll = _read_scores(root)
    calibration = None
    if len(grid) == n:
        total = sum(grid.values(), CalibrationSums.empty(GRID, int(settings["bins"])))
        found: TStarSearch = find_t_star(total)
        mine = [s for s in star.values() if s.temperatures == (found.temperature,)]
        if len(mine) == n:
            calibration = summarize(total, sum(mine[1:], mine[0]), found, texts=n)
    k = int(settings["sample_tokens"])
    covered = [x for v in nll.values() for x in v[:k]]
    human = sum(covered) / len(covered) if covered else math.nan
    records, _ = read_records(root / SAMPLES_DIR, n=1) if (root / SAMPLES_DIR).exists() \
        else ([], False)
    sets = []
    for t in sorted({float(r["temperature"]) for r in records}):
        mine_r = [r for r in records if float(r["temperature"]) == t]
        if len(mine_r) < n:
            continue
        lps = [x for r in mine_r for x in r["steps"]["raw_logprob"]]
        sets.append(SampleSet(t, len(mine_r), len(lps),
                              -sum(lps) / len(lps) if lps else math.nan))
    t_match, note = match_temperature(sets, human)
    timing = read_json(root / TIMING_FILE)["runs"] if (root / TIMING_FILE).exists() else []
    return CalibrationStudy(settings, calibration, human, sets, t_match, note, timing)


LAB_PROMPTS, LAB_TOKENS = 8, 64  # the lab's quick T*: 8 passages x 64 scored tokens


def default_text_calibration(model: Backend, *, prompts: int = LAB_PROMPTS,
                             max_tokens: int = LAB_TOKENS, prompt_tokens: int = 35,
                             bins: int = BINS) -> Calibration:
    """T* and the rest on the study's default text at a small size (what the lab shows):
    ``prompts`` Britannica passages, ``max_tokens`` scored tokens each, no sampling.

    ``max_tokens`` shrinks to fit a model with a short context. Raises
    :class:`TempscopeError` when the corpus is not installed.
    """
    from tempscope.study.calibration import calibrate
    from tempscope.study.corpus import human_references

    room = model.facts.context_length - prompt_tokens - 1  # - a BOS token
    max_tokens = max(1, min(max_tokens, room))
    found = check_calibration_study(prompts, max_tokens, prompt_tokens, 1)
    refs = human_references(model, found, prompts, prompt_tokens=prompt_tokens,
                            continuation_tokens=max_tokens)
    ids = [model.encode(r.prompt) + list(r.token_ids) for r in refs]
    return calibrate(model, ids, [len(i) - max_tokens for i in ids], bins=bins)
