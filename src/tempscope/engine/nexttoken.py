"""Next-token distributions at many temperatures from ONE forward pass.

The model is run once on the prompt and only the last position's logits are kept; every
temperature is then pure math on that one ``(V,)`` vector (:mod:`tempscope.distribution`):
the full distribution, a top-N table, entropy, effective vocabulary, and one seeded draw.

>>> from tempscope.engine.loader import load_model
>>> r = next_token(load_model(), "The cat slept on the", [0.1, 1, 100], seed=0)  # doctest: +SKIP
>>> r.results[0].sampled.text, round(r.results[1].top[0].probability, 3)  # doctest: +SKIP
(' couch', 0.453)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tempscope.distribution import check_temperature, entropy, inverse_cdf, softmax

if TYPE_CHECKING:
    import torch

    from tempscope.engine.backend import Backend
    from tempscope.sampling.params import SamplingParams

DEFAULT_TEMPERATURES: tuple[float, ...] = (0.1, 0.5, 1.0, 5.0, 10.0, 100.0)  # the seed's list

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(text: str) -> str:
    """``text`` with whitespace made visible: spaces become ``␣``, newlines ``\\n``, tabs
    ``\\t``; other control characters their ``\\x..`` escape; an empty token ``''``.

    >>> visible(" mat"), visible("\\n\\n"), visible("")
    ('␣mat', '\\\\n\\\\n', "''")
    """
    if not text:
        return "''"
    out = []
    for ch in text:
        if ch == " ":
            out.append("␣")
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def temperature_label(t: float) -> str:
    """``0 (greedy)``, ``inf (uniform)`` or the number, for titles."""
    return "0 (greedy)" if t == 0 else ("inf (uniform)" if math.isinf(t) else f"{t:g}")


@dataclass(frozen=True)
class ViewTable:
    """One table of a next-token view, ready to print: ``rows`` are strings, ``highlight`` the
    index of the sampled token's row (``None``: not among them)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    highlight: int | None = None


ViewPart = str | ViewTable  # a line of text, or a table


class NextTokenView(Protocol):
    """What a next-token view gives whichever engine made it: a local model's whole-vocabulary
    :class:`NextTokenResult`, or what a server's log-probabilities give
    (:class:`~tempscope.engine.remote.engine.RemoteNextToken`). Callers print
    :meth:`text_parts`, plot :meth:`across_temperatures` and save :meth:`to_dict`."""

    @property
    def model(self) -> str: ...

    @property
    def prompt(self) -> str: ...

    @property
    def seed(self) -> int: ...

    def text_parts(self) -> list[ViewPart]:
        """The view as lines and tables, in the order a terminal shows them."""
        ...

    def across_temperatures(self) -> tuple[list[str], list[tuple[float, list[float]]]]:
        """The same tokens at every temperature: their labels, and per temperature their
        probabilities."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        ...


def token_display(model: Backend, token_id: int, text: str) -> str:
    """How to show one token: :func:`visible` text, or, for a token holding only part of a
    UTF-8 character (it decodes to ``�``), its bytes, e.g. ``\\xe2\\x80``."""
    if "\ufffd" not in text:
        return visible(text)
    return visible(model.token_bytes(token_id).decode("utf-8", errors="backslashreplace"))


@dataclass(frozen=True)
class TokenRow:
    """One token of a distribution: its rank (1 = most likely), id, text and numbers."""

    rank: int  # 1-based position when sorted by probability (ties: lower id first)
    token_id: int
    text: str  # the decoded token, e.g. " mat"
    display: str  # text with whitespace made visible ("␣mat"); a partial character's bytes
    logit: float  # the model's raw score (temperature does not change it)
    probability: float  # at this row's temperature (after the samplers, when there are any)
    raw_probability: float | None = None  # softmax(logits) at T = 1, no samplers; set only
    # when samplers ran, so the two can be shown side by side

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rank": self.rank, "token_id": self.token_id, "text": self.text,
                             "display": self.display, "logit": self.logit,
                             "probability": self.probability}
        if self.raw_probability is not None:
            d["raw_probability"] = self.raw_probability
        return d


@dataclass(frozen=True)
class TemperatureResult:
    """The next-token distribution at one temperature."""

    temperature: float
    probabilities: np.ndarray  # (V,) float64, the full distribution; sums to 1
    top: list[TokenRow]  # the N most likely tokens, most likely first
    entropy: float  # nats
    effective_vocab: float  # exp(entropy): how many equally likely tokens this is worth
    top_probability: float  # probability of the most likely token
    sampled: TokenRow  # one draw from this distribution (the argmax at T = 0)
    chain: tuple[str, ...] | None = None  # the samplers that ran, in order; None = none asked
    kept: int | None = None  # tokens with probability > 0 after the samplers (None = none)

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """JSON-ready; ``full=True`` adds the whole ``(V,)`` distribution."""
        d: dict[str, Any] = {
            "temperature": _json_float(self.temperature),
            "top": [row.to_dict() for row in self.top],
            "entropy": self.entropy,
            "effective_vocab": self.effective_vocab,
            "top_probability": self.top_probability,
            "sampled": self.sampled.to_dict(),
        }
        if self.chain is not None:
            d["chain"] = list(self.chain)
            d["kept"] = self.kept
        if full:
            d["probabilities"] = self.probabilities.tolist()
        return d


@dataclass(frozen=True)
class NextTokenResult:
    """What :func:`next_token` found: the prompt, its raw logits and one result per
    temperature (in the order asked)."""

    model: str
    prompt: str
    chat: bool
    prompt_ids: list[int]
    seed: int  # the seed every draw used (chosen at random when none was given)
    logits: np.ndarray  # (V,) float32, raw last-position logits
    results: list[TemperatureResult]

    @property
    def temperatures(self) -> list[float]:
        return [r.temperature for r in self.results]

    def across_temperatures(self) -> tuple[list[str], list[tuple[float, list[float]]]]:
        """The same tokens at every temperature, for a side-by-side view: the top rows at the
        lowest temperature (as displayed), and per temperature their probabilities."""
        coolest = min(self.results, key=lambda r: r.temperature)
        ids = [row.token_id for row in coolest.top]
        return ([row.display for row in coolest.top],
                [(r.temperature, [float(r.probabilities[i]) for i in ids]) for r in self.results])

    def text_parts(self) -> list[ViewPart]:
        """What ``tempscope next`` prints: per temperature the seed's line, the table and a
        summary line."""
        vocab = int(self.logits.shape[0])
        parts: list[ViewPart] = [f"{self.model}: {len(self.prompt_ids)} prompt tokens, one "
                                 f"forward pass, seed {self.seed}", ""]
        for r in self.results:
            parts += self._temperature_parts(r, vocab)
        return parts

    def _temperature_parts(self, r: TemperatureResult, vocab: int) -> list[ViewPart]:
        token = r.sampled.text
        if not token.isprintable() or "\ufffd" in token:  # a newline or a partial character
            token = r.sampled.display
        if self.chat:
            line = f"LLM Temperature: {r.temperature:g} → {self.prompt!r} → reply starts: {token}"
        else:
            line = f"LLM Temperature: {r.temperature:g} → {self.prompt}{token}"
        rows = [
            [str(row.rank), str(row.token_id), row.display, f"{row.logit:.4f}",
             *([] if row.raw_probability is None else [f"{row.raw_probability:.5f}"]),
             f"{row.probability:.5f}"]
            for row in r.top
        ]
        highlight = next((i for i, row in enumerate(r.top)
                          if row.token_id == r.sampled.token_id), None)
        title = f"T = {temperature_label(r.temperature)}"
        header = ["rank", "id", "token", "logit", "probability"]
        if r.chain is not None:  # samplers ran: raw and processed side by side
            title += f": {' -> '.join(r.chain)}"
            header = ["rank", "id", "token", "logit", "raw (T=1)", "processed"]
        parts: list[ViewPart] = [line, ViewTable(title, header, rows, highlight)]
        if r.chain is not None:
            parts.append(f"{r.kept:,} of {vocab:,} tokens survive")
        parts += [f"T={r.temperature:g}: entropy {r.entropy:.4f} nats, effective vocabulary "
                  f"{r.effective_vocab:,.2f} of {vocab:,} tokens, top token "
                  f"{r.top_probability:.5f}, sampled {r.sampled.display!r} (rank "
                  f"{r.sampled.rank}, p={r.sampled.probability:.5f})", ""]
        return parts

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """JSON-ready; ``full=True`` adds each temperature's whole distribution."""
        return {
            "model": self.model,
            "prompt": self.prompt,
            "chat": self.chat,
            "prompt_ids": self.prompt_ids,
            "seed": self.seed,
            "vocab_size": int(self.logits.shape[0]),
            "results": [r.to_dict(full=full) for r in self.results],
        }


def last_logits(model: Backend, prompt_ids: Sequence[int]) -> torch.Tensor:
    """Raw logits for the token after ``prompt_ids``: one forward pass, last position only.

    Args:
        model: a loaded model.
        prompt_ids: ``(T,)`` token ids, at least one.

    Returns:
        ``(V,)`` float32 tensor on the CPU, ``V = model.vocab_size``.
    """
    if len(prompt_ids) == 0:
        raise ValueError("the prompt has no tokens: give some text")
    limit = model.facts.context_length
    if limit and len(prompt_ids) > limit:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens but {model.name} reads at "
                         f"most {limit}: shorten it")
    return model.last_logits(prompt_ids)


def next_token(
    model: Backend,
    prompt: str,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    *,
    top: int = 10,
    seed: int | None = None,
    chat: bool = False,
    params: SamplingParams | None = None,
) -> NextTokenResult:
    """The next-token distribution after ``prompt`` at each temperature, from one forward pass.

    Args:
        model: from :func:`tempscope.load_model`.
        prompt: non-empty text; with ``chat=True`` it becomes one user message in the model's
            chat template.
        temperatures: each ``>= 0``; 0 is greedy, ``inf`` uniform.
        top: rows in each table, ``>= 1`` (clamped to the vocabulary).
        seed: seeds the draws; every temperature uses the same uniform number (inverse CDF),
            so draws differ across temperatures only because the distributions do.
            ``None`` picks a seed at random and reports it in the result.
        params: samplers to run after the temperature (top-k, top-p, min-p, ..., ``order``);
            its own ``temperature`` is replaced by each of ``temperatures`` in turn. Each
            result then holds the processed distribution
            (:func:`tempscope.sampling.probabilities`), ranks, entropy and draw from it, the
            chain that ran and how many tokens survive; each table row also carries the raw
            probability (``softmax(logits)`` at T = 1, no samplers) beside it. ``None`` (or a
            chain with no sampler on) = plain temperature softmax.

    Returns:
        A :class:`NextTokenResult` with one :class:`TemperatureResult` per temperature.
    """
    if not isinstance(prompt, str) or prompt == "":
        raise ValueError("the prompt is empty: give some text, e.g. \"The cat slept on the\"")
    temps = [check_temperature(t) for t in temperatures]
    if not temps:
        raise ValueError("give at least one temperature, e.g. 0.1 1 10")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a whole number >= 1, got {top!r}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    prompt_ids = model.encode(prompt, chat=chat)
    raw = last_logits(model, prompt_ids)  # (V,) float32, the only model call
    logits = raw.numpy()
    logits64 = logits.astype(np.float64)
    u = _uniform(seed)  # one draw in [0, 1), shared by every temperature
    if params is not None and not params.chain:
        params = None  # no sampler on: the plain temperature softmax, same numbers
    if params is None:
        results = [_at_temperature(model, logits64, t, top, u) for t in temps]
    else:
        raw_probs = np.asarray(softmax(logits64, 1.0))  # (V,) float64, T = 1, no samplers
        results = [_with_samplers(model, raw, logits64, raw_probs, params, t, top, u,
                                  prompt_ids) for t in temps]
    return NextTokenResult(model.name, prompt, chat, prompt_ids, seed, logits, results)


def _with_samplers(
    model: Backend, raw: torch.Tensor, logits: np.ndarray, raw_probs: np.ndarray,
    params: SamplingParams, t: float, top: int, u: float, prompt_ids: list[int],
) -> TemperatureResult:
    """One temperature with the sampler chain: processed distribution, raw one beside it. The
    prompt is the history the penalties and DRY read."""
    from tempscope.engine.loop import BackendVocab
    from tempscope.sampling import probabilities

    p = params.model_copy(update={"temperature": t})
    processed = probabilities(raw, p, history=prompt_ids,
                              vocab=BackendVocab(model)).double().numpy()  # (V,) removed: 0
    processed = processed / processed.sum()  # float32 rounding: sum to 1 in float64
    greedy = p.is_greedy
    res = _at_temperature(model, logits, t, top, u, probs=processed, raw_probs=raw_probs,
                          greedy=greedy)
    return TemperatureResult(
        temperature=res.temperature, probabilities=res.probabilities, top=res.top,
        entropy=res.entropy, effective_vocab=res.effective_vocab,
        top_probability=res.top_probability, sampled=res.sampled, chain=p.chain,
        kept=int(np.count_nonzero(processed)),
    )


def _at_temperature(
    model: Backend, logits: np.ndarray, t: float, top: int, u: float, *,
    probs: np.ndarray | None = None, raw_probs: np.ndarray | None = None,
    greedy: bool | None = None,
) -> TemperatureResult:
    """The result at one temperature; ``probs`` (already processed) replaces
    ``softmax(logits / t)`` and ``raw_probs`` is shown beside it when given."""
    if probs is None:
        probs = np.asarray(softmax(logits, t))  # (V,) float64
    # Rank by probability, then by logit (T = inf ties everything), then by id: only the
    # top N are sorted; any other token's rank is counted.
    order = top_indices(probs, logits, top)  # (N,) most likely first

    def row(i: int, rank: int) -> TokenRow:
        text = model.token_text(i)
        return TokenRow(rank, i, text, token_display(model, i, text), float(logits[i]),
                        float(probs[i]),
                        None if raw_probs is None else float(raw_probs[i]))

    if (t == 0) if greedy is None else greedy:
        choice = int(np.argmax(probs if greedy else logits))
    else:
        choice = int(inverse_cdf(probs, u))  # the first token whose CDF exceeds u
    rows = [row(int(i), n + 1) for n, i in enumerate(order)]
    picked = next((r for r in rows if r.token_id == choice), None)
    h = float(entropy(probs))
    return TemperatureResult(
        temperature=t,
        probabilities=probs,
        top=rows,
        entropy=h,
        effective_vocab=math.exp(h),
        top_probability=float(probs.max()),
        sampled=picked or row(choice, rank_of(probs, logits, choice)),
    )


def top_indices(probs: np.ndarray, logits: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` most likely token ids, most likely first: by probability, then by logit,
    then by id (lower first). Sorts only the candidates, not the whole vocabulary.

    Args:
        probs: ``(V,)`` probabilities.
        logits: ``(V,)`` raw logits (break ties in probability, e.g. at T = inf or at 0).
        n: how many, ``>= 1`` (clamped to ``V``).

    Returns:
        ``(min(n, V),)`` int64 ids.

    >>> top_indices(np.array([.2, .5, .2, .1]), np.array([1.0, 3.0, 2.0, 0.0]), 3).tolist()
    [1, 2, 0]
    """
    v = len(probs)
    n = min(n, v)
    cand = _at_least_nth(probs, np.arange(v), n)
    if len(cand) > 4 * n + 64:  # many ties at the cut (zeros at T = 0): narrow by logit
        cut = probs[cand].min()
        sure = cand[probs[cand] > cut]
        tied = cand[probs[cand] == cut]
        cand = np.concatenate([sure, _at_least_nth(logits, tied, n - len(sure))])
    return cand[np.lexsort((cand, -logits[cand], -probs[cand]))][:n]


def _at_least_nth(values: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """The ids whose value is at least the ``n``-th largest among ``values[ids]`` (ties at
    that value all kept, ascending id order preserved)."""
    sub = values[ids]
    nth = np.partition(sub, len(sub) - n)[len(sub) - n]
    kept: np.ndarray = ids[sub >= nth]
    return kept


def rank_of(probs: np.ndarray, logits: np.ndarray, i: int) -> int:
    """1-based rank of token ``i`` in the order of :func:`top_indices`, by counting."""
    p, x = probs[i], logits[i]
    same_p = probs == p
    ahead = (probs > p) | (same_p & (logits > x))
    ahead |= same_p & (logits == x) & (np.arange(len(probs)) < i)
    return int(np.count_nonzero(ahead)) + 1


def _uniform(seed: int) -> float:
    """One uniform number from a ``torch.Generator`` seeded with ``seed``: the draw a seeded
    per-row sampler makes for its first token, so the same seed picks the same token."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"
