"""Generation and next-token distributions from a remote OpenAI-compatible server.

The same results the local engine gives (:class:`~tempscope.engine.loop.Sample`,
:class:`~tempscope.engine.loop.StepEvent`), filled from what an HTTP API returns, with what it
cannot return said plainly:

- ``token_ids == []`` and ``n_tokens`` comes from the returned tokens; steps carry the
  server's token ids where it gives them (llama-server), else ``token_id = -1`` and negative
  stand-ins for the alternatives;
- log-probabilities are *raw* (log p at T = 1, no samplers: ``raw_logprob``) only when the
  server says so (:meth:`RemoteClient.logprobs_fields`); otherwise they are the server's
  *processed* ones (``logprob``) and ``raw_logprob`` is NaN, so ``mean_logprob`` is NaN rather
  than a number that means something else; entropies are NaN (a top-N list cannot give them);
  llama-server gives both, the processed ones from a second request asking for
  ``post_sampling_probs`` (``processed=True``);
- ``finish_reason``: ``length``; ``eos`` / ``stop`` from vLLM's ``stop_reason`` when present,
  else ``eos`` when no stop string was asked for and ``stop`` (ambiguous) when one was;
- sampler settings the server refuses are not sent and are listed in ``ignored``;
- every sampler the user left off is sent switched off where the server takes the field
  (:meth:`RemoteClient.neutral_fields`), so the server's defaults (llama.cpp: top-k 40, min-p
  0.05, ...) do not shape the text; each sample keeps what its request said (``sent``).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from tempscope.distribution import check_temperature, entropy, inverse_cdf, softmax
from tempscope.engine.loop import Alternative, Sample, StepEvent, derive_seed
from tempscope.engine.remote.client import RemoteClient, RemoteError
from tempscope.engine.remote.wire import llama_server_fields, parse_logprobs
from tempscope.sampling.registry import KNOBS

if TYPE_CHECKING:
    from tempscope.engine.loop import FinishReason
    from tempscope.engine.nexttoken import ViewPart
    from tempscope.sampling import SamplingParams

__all__ = [
    "RemoteNextToken",
    "RemoteRow",
    "RemoteSample",
    "RemoteTemperatureView",
    "check_settings",
    "remote_generate",
    "remote_next_token",
    "remote_rows",
    "request_fields",
    "wire_fields",
]

WIDE_LOGPROBS = 100  # first ask for this many alternatives; 20 (OpenAI's cap) when refused
OPENAI_MAX_LOGPROBS = 20
_RENAMED = {"order": "sampler_order"}
_LOCAL_ONLY = {"seed", "temperature"}  # sent by the row itself
# A setting another server knows under another name (llama.cpp's repeat_penalty): the user's
# value also goes under that name when the server takes it.
_ALIASES = {k.name: alias for k in KNOBS.values()
            for alias in {k.llama_cpp, k.vllm} - {k.name, None} if alias is not None}


@dataclass
class RemoteSample(Sample):
    """A :class:`Sample` from a remote server, with what the server did not do.

    ``ignored``: requested sampler settings the server refused (not applied);
    ``logprobs_raw``: whether the step log-probabilities are raw (see the module docstring);
    ``sent``: the sampler fields the request carried (the user's and the neutral ones).
    """

    completion_tokens: int = 0
    ignored: list[str] = field(default_factory=list)
    logprobs_raw: bool = False
    sent: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return max(len(self.token_ids), self.completion_tokens)


@dataclass(frozen=True)
class RemoteRow:
    """One request: a prompt, its sampler settings and seed, its token budget and the strings
    that end it (the text stops before them)."""

    prompt: str
    params: SamplingParams
    seed: int | None
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()


def request_fields(params: SamplingParams) -> dict[str, Any]:
    """The sampler fields (beyond ``temperature`` and ``seed``) of ``params`` as request JSON,
    in vLLM's names; settings that are off are left out."""
    out: dict[str, Any] = {}
    for name, value in params.model_dump(exclude_none=True).items():
        if name in _LOCAL_ONLY or (name == "temperature_last" and not value):
            continue
        if name == "logit_bias":
            value = {str(k): v for k, v in value.items()}
        out[_RENAMED.get(name, name)] = value
    return out


def wire_fields(client: RemoteClient,
                params: SamplingParams) -> tuple[dict[str, Any], list[str]]:
    """The sampler fields (beyond ``temperature`` and ``seed``) a request for ``params``
    carries, and the settings the server refused.

    A setting the user gave goes with its value when the server accepts it; every other
    sampler the server takes a field for goes switched off (:meth:`RemoteClient.neutral_fields`).
    ``repetition_penalty`` also goes as llama.cpp's ``repeat_penalty``, and mirostat switches
    on llama.cpp's ``mirostat_mode`` (v2), so llama.cpp applies what was asked as well. A
    llama-server gets llama.cpp's names and its chain instead
    (:func:`~tempscope.engine.remote.wire.llama_server_fields`).
    """
    if client.server.is_llama_server:
        return llama_server_fields(params, client.server)
    asked = request_fields(params)
    kept, ignored = client.split_fields(asked)
    sent = {k: v for k, v in client.neutral_fields().items() if k not in asked}
    for name, alias in _ALIASES.items():
        if name in asked and alias in sent:
            sent[alias] = asked[name]
            if name in ignored:  # applied under the other name after all
                ignored.remove(name)
    if ("mirostat_tau" in kept or "mirostat" in kept) and "mirostat_mode" in sent:
        # llama-cpp-python switches mirostat on by its mode: the version asked for (v2 default)
        sent["mirostat_mode"] = params.value("mirostat")
    return {**sent, **kept}, ignored


def _temperature(params: SamplingParams) -> float:
    t = 1.0 if params.temperature is None else float(params.temperature)
    if math.isinf(t):
        raise ValueError("temperature inf (uniform) cannot be sent to a server (JSON has no "
                         "infinity): use a large finite value such as 1000")
    return t


def remote_rows(
    client: RemoteClient,
    rows: Sequence[RemoteRow],
    *,
    top_alternatives: int = 5,
    on_step: Callable[[StepEvent], None] | None = None,
    on_result: Callable[[int, RemoteSample], None] | None = None,
    processed: bool = False,
) -> list[RemoteSample]:
    """Run ``rows``, one request each, at most ``client.concurrency`` at once.

    Args:
        client: the server.
        rows: ``(R,)`` prompt, params, seed, ``max_tokens`` and stop strings per request.
        top_alternatives: ``logprobs`` asked for per step (alternatives kept per step).
        on_step: called with each step event of an answer when it arrives (a server answers
            a request whole), before ``on_result``.
        on_result: called with ``(row index, sample)`` as each answer arrives (in any order),
            so a caller can save it before the next one comes. The callbacks run one answer
            at a time, never concurrently.
        processed: also fill each step's processed numbers (``logprob``, the alternatives'
            ``prob``: after the server's samplers) where the server can give them
            (llama-server's ``post_sampling_probs``): a second request per row, the same
            seed; kept only when it produced the same tokens (else they stay NaN).

    Returns:
        ``(R,)`` samples in the order of ``rows``; raises :class:`RemoteError` on the first
        request that fails after its retries (answers that arrived were passed to
        ``on_result`` first).
    """
    logprob_fields, raw = client.logprobs_fields()
    plans = []
    for row in rows:
        fields, ignored = wire_fields(client, row.params)
        body: dict[str, Any] = {
            "prompt": row.prompt, "max_tokens": row.max_new_tokens,
            "temperature": _temperature(row.params), "logprobs": top_alternatives,
            **fields, **logprob_fields,
        }
        if row.seed is not None:
            body["seed"] = row.seed
        if row.stop:
            body["stop"] = list(row.stop)
        plans.append((body, ignored, fields))

    both = processed and raw and client.server.is_llama_server
    callbacks = threading.Lock()

    def one(i: int) -> RemoteSample:
        body, ignored, sent = plans[i]
        sample = _sample(client.completion(body), rows[i], i, raw=raw, ignored=ignored,
                         stops=bool(rows[i].stop), sent=sent)
        if both:
            again = client.completion({**body, "post_sampling_probs": True})
            sample.steps = _with_processed(sample.steps, again)
        with callbacks:
            if on_step is not None:
                for step in sample.steps:
                    on_step(step)
            if on_result is not None:
                on_result(i, sample)
        return sample

    if len(rows) <= 1 or client.concurrency == 1:
        return [one(i) for i in range(len(rows))]
    with ThreadPoolExecutor(max_workers=min(client.concurrency, len(rows))) as pool:
        futures = [pool.submit(one, i) for i in range(len(rows))]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()  # requests not started yet are dropped; those in flight finish
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        return [f.result() for f in futures]


def _sample(data: dict[str, Any], row: RemoteRow, index: int, *, raw: bool,
            ignored: list[str], stops: bool,
            sent: Mapping[str, Any] | None = None) -> RemoteSample:
    choices = data.get("choices") or []
    if not choices:
        raise RemoteError(f"the server answered without choices: {str(data)[:200]}")
    choice = choices[0]
    parsed = parse_logprobs(choice.get("logprobs"))
    tokens = [t.text for t in parsed]
    raw = raw and not any(t.processed for t in parsed)
    steps = []
    for k, tok in enumerate(parsed):
        # Ids when the server gives them (llama-server), else -1 for the token and negative
        # stand-ins for the alternatives.
        alts = [Alternative(_alt_id(t, i, tok.text, j), t, math.exp(v) if raw else math.nan,
                            math.nan if raw else math.exp(v))
                for j, (t, i, v) in enumerate(tok.top)]
        value = tok.logprob
        steps.append(StepEvent(row=index, step=k + 1,
                               token_id=-1 if tok.token_id is None else tok.token_id,
                               text=tok.text, raw_logprob=value if raw else math.nan,
                               logprob=math.nan if raw else value, entropy=math.nan,
                               raw_entropy=math.nan, top=alts, delta=tok.text))
    reason, stop_text = _finish(choice, stops)
    if steps:
        steps[-1] = replace(steps[-1], finished=reason)
    usage = data.get("usage") or {}
    completion = int(usage.get("completion_tokens") or 0) if len(choices) == 1 else 0
    return RemoteSample(token_ids=[], text=str(choice.get("text") or ""), finish_reason=reason,
                        steps=steps, row=index, prompt=row.prompt, params=row.params,
                        seed=row.seed, stop_text=stop_text,
                        completion_tokens=max(completion, len(tokens)), ignored=list(ignored),
                        logprobs_raw=raw, sent=dict(sent or {}))


def _with_processed(steps: list[StepEvent], data: dict[str, Any]) -> list[StepEvent]:
    """``steps`` (raw numbers) with the processed ones of a second answer to the same request
    (``post_sampling_probs``), when it chose the same tokens; else ``steps`` unchanged."""
    after = parse_logprobs((data.get("choices") or [{}])[0].get("logprobs"))
    if [t.token_id for t in after] != [s.token_id for s in steps] or not all(
            t.processed for t in after):
        return steps
    out = []
    for step, tok in zip(steps, after, strict=True):
        kept = {i: math.exp(v) for _, i, v in tok.top}
        # A token missing from a list shorter than asked for was removed (0); from a full
        # list, its probability is unknown.
        missing = 0.0 if len(tok.top) < len(step.top) else math.nan
        top = [replace(a, prob=kept.get(a.token_id, missing)) for a in step.top]
        out.append(replace(step, logprob=tok.logprob, top=top))
    return out


def _alt_id(text: str, token_id: int | None, chosen: str, rank: int) -> int:
    if token_id is not None:
        return token_id
    return -1 if text == chosen else -(rank + 2)


def _finish(choice: dict[str, Any], stops: bool) -> tuple[FinishReason, str | None]:
    reason = choice.get("finish_reason")
    if reason == "length":
        return "length", None
    if "stop_reason" in choice:  # vLLM: the stop string, an eos/stop token id, or None (eos)
        why = choice["stop_reason"]
        return ("stop", why) if isinstance(why, str) else ("eos", None)
    return ("stop", None) if stops else ("eos", None)


def remote_generate(
    client: RemoteClient,
    prompts: str | Sequence[str],
    params: SamplingParams | Sequence[SamplingParams],
    *,
    n: int = 1,
    max_new_tokens: int = 64,
    stop: str | Sequence[str] | None = None,
    stop_at_newline: bool = False,
    seed: int | None = None,
    logprobs: int = 5,
    processed: bool = False,
    on_step: Callable[[StepEvent], None] | None = None,
) -> list[RemoteSample]:
    """:func:`tempscope.generate` against a server: one request per sample.

    Args are those of :func:`tempscope.generate` (sample ``i`` gets ``derive_seed(seed, i)``;
    ``on_step`` sees each answer's step events when it arrives); ``logprobs`` is how many
    alternatives each step lists; ``processed`` also asks for the numbers after the server's
    samplers (see :func:`remote_rows`).

    Returns:
        ``len(prompts) * len(params) * n`` :class:`RemoteSample`, prompt-major, then params,
        then sample; ``sample.ignored`` names settings the server refused.
    """
    from tempscope.sampling import SamplingParams

    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    param_list = [params] if isinstance(params, SamplingParams) else list(params)
    if not prompt_list or not param_list:
        raise ValueError("give at least one prompt and one SamplingParams")
    if isinstance(n, bool) or n < 1 or max_new_tokens < 1:
        raise ValueError(f"n and max_new_tokens must be >= 1, got {n} and {max_new_tokens}")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if stop_at_newline:
        stops.append("\n")
    where: list[tuple[int, int, int]] = []
    rows: list[RemoteRow] = []
    for pi, prompt in enumerate(prompt_list):
        for qi, p in enumerate(param_list):
            for k in range(n):
                s = derive_seed(seed if seed is not None else p.seed, k)
                where.append((pi, qi, k))
                rows.append(RemoteRow(prompt, p, s, max_new_tokens, tuple(stops)))
    out = remote_rows(client, rows, top_alternatives=logprobs, processed=processed,
                      on_step=on_step)
    for sample, (pi, qi, k) in zip(out, where, strict=True):
        sample.prompt_index, sample.params_index, sample.sample_index = pi, qi, k
    return out


# ------------------------------------------------------------------------------ next token


@dataclass(frozen=True)
class RemoteTemperatureView:
    """The next-token distribution at one temperature, from what the server returned.

    ``probabilities``: ``(N,)`` ``softmax(logp / T)`` over the returned tokens. When the
    server returned every token (llama-server with ``n_probs`` = the vocabulary) that is the
    exact distribution at every T (``exact``); otherwise at T = 1 the server's own numbers
    (exact for these tokens; they sum to ``1 - mass_outside``) and at any other T the top-N
    renormalised: an approximation that ignores the tokens outside.

    ``processed``: ``(N,)`` the probability of each token after the server's own samplers at
    this temperature (llama-server's ``post_sampling_probs``; 0 = removed), ``kept`` how many
    tokens it kept; ``None`` when no samplers were asked for or the server cannot say.
    """

    temperature: float
    tokens: list[str]  # the top-N, likeliest first
    logprobs: list[float]  # (N,) as returned, at T = 1
    probabilities: list[float]  # (N,)
    exact: bool  # the numbers are the true distribution at this T, not a top-N approximation
    entropy: float  # nats, over the returned tokens (all of them when exact)
    sampled: int  # index into tokens of a seeded draw (the argmax at T = 0)
    token_ids: list[int] | None = None  # (N,) when the server gives ids
    processed: list[float] | None = None  # (N,) after the server's samplers
    kept: int | None = None  # tokens with probability > 0 after them

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for i, (t, lp, p) in enumerate(zip(self.tokens, self.logprobs, self.probabilities,
                                           strict=True)):
            row: dict[str, Any] = {"rank": i + 1, "text": t, "logprob": lp, "probability": p}
            if self.token_ids is not None:
                row["token_id"] = self.token_ids[i]
            if self.processed is not None:
                row["processed_probability"] = self.processed[i]
            rows.append(row)
        d: dict[str, Any] = {
            "temperature": self.temperature if math.isfinite(self.temperature) else "inf",
            "exact": self.exact, "entropy_top_n": self.entropy,
            "sampled": self.tokens[self.sampled], "top": rows}
        if self.exact:
            d["entropy"] = self.entropy
        if self.processed is not None:
            d["kept"] = self.kept
        return d


@dataclass(frozen=True)
class RemoteNextToken:
    """What :func:`remote_next_token` found; ``not_derived`` lists the temperatures the
    returned numbers cannot give (processed logprobs), ``note`` says why; ``sent`` the sampler
    fields the request carried (every one switched off); ``exact`` whether the server returned
    every token's probability, so every view is exact; ``chain`` the server-side samplers
    behind each view's ``processed`` column (``None``: none asked)."""

    model: str
    endpoint: str
    prompt: str
    seed: int
    logprobs_raw: bool
    top_n: int  # alternatives the server returned
    mass_outside: float  # 1 - their total probability at T = 1
    results: list[RemoteTemperatureView]
    not_derived: list[float]
    note: str
    sent: dict[str, Any] = field(default_factory=dict)
    exact: bool = False
    chain: list[str] | None = None

    def across_temperatures(self) -> tuple[list[str], list[tuple[float, list[float]]]]:
        """The same tokens at every temperature, for a side-by-side view: the returned tokens
        every view lists (likeliest at T = 1 first, whitespace made visible), and per
        temperature their probabilities."""
        from tempscope.engine.nexttoken import visible

        k = min(len(r.tokens) for r in self.results)
        return ([visible(t) for t in self.results[0].tokens[:k]],
                [(r.temperature, r.probabilities[:k]) for r in self.results])

    def text_parts(self) -> list[ViewPart]:
        """What ``tempscope next --endpoint`` prints: the local layout, marked as exact over
        the whole vocabulary or as a top-N approximation."""
        from tempscope.engine.nexttoken import ViewTable, visible

        kind = "raw" if self.logprobs_raw else "processed"
        scope = "every token's" if self.exact else f"top-{self.top_n}"
        parts: list[ViewPart] = [f"{self.model} at {self.endpoint}: one max_tokens=1 request, "
                                 f"{scope} {kind} logprobs, seed {self.seed}",
                                 f"note: {self.note}"]
        if self.sent:
            parts.append("samplers switched off on the server: "
                         + ", ".join(f"{k}={v:g}" for k, v in self.sent.items()))
        parts.append("")
        for r in self.results:
            if self.exact:
                label = f"exact over all {self.top_n:,} tokens"
            else:
                label = "exact at T = 1" if r.exact else f"top-{self.top_n} renormalised"
            parts.append(f"LLM Temperature: {r.temperature:g} → {self.prompt}"
                         f"{r.tokens[r.sampled]}")
            header = ["rank", "token", "log p (T=1)", "probability"]
            rows = [[str(i + 1), visible(t), f"{lp:.4f}", f"{p:.5f}"]
                    for i, (t, lp, p) in enumerate(zip(r.tokens, r.logprobs, r.probabilities,
                                                       strict=True))]
            if r.processed is not None:  # the server's samplers ran: before and after
                label += f"; processed: {' -> '.join(self.chain or [])} on the server"
                header = ["rank", "token", "log p (T=1)", f"T={r.temperature:g} only",
                          "processed"]
                rows = [[*row, f"{q:.5f}"] for row, q in zip(rows, r.processed, strict=True)]
            parts.append(ViewTable(f"T = {r.temperature:g} ({label})", header, rows,
                                   r.sampled))
            if r.kept is not None:
                parts.append(f"{r.kept:,} tokens survive the server's samplers")
            if self.exact:
                parts.append(f"T={r.temperature:g}: entropy {r.entropy:.4f} nats (exact, "
                             "before the samplers)")
            else:
                parts.append(f"T={r.temperature:g}: entropy over the top-{self.top_n} "
                             f"{r.entropy:.4f} nats; outside the top-{self.top_n} at T=1: "
                             f"{self.mass_outside:.5f}")
            parts.append("")
        if self.not_derived:
            temps = " ".join(f"{t:g}" for t in self.not_derived)
            parts.append(f"not derived: T = {temps} (the server's logprobs are not raw)")
        return parts

    def to_dict(self) -> dict[str, Any]:
        d = {"model": self.model, "endpoint": self.endpoint, "prompt": self.prompt,
             "seed": self.seed, "logprobs_raw": self.logprobs_raw, "sent": self.sent,
             "approximation": "none" if self.exact else f"top-{self.top_n}",
             "exact": self.exact, "top_n": self.top_n,
             "mass_outside_top_n": self.mass_outside,
             "not_derived": [t if math.isfinite(t) else "inf" for t in self.not_derived],
             "note": self.note, "results": [r.to_dict() for r in self.results]}
        if self.chain is not None:
            d["chain"] = self.chain
        return d


def remote_next_token(client: RemoteClient, prompt: str, temperatures: Sequence[float],
                      *, top: int = 20, seed: int | None = None,
                      params: SamplingParams | None = None) -> RemoteNextToken:
    """The next-token distribution from one ``max_tokens=1`` request's log-probabilities.

    A llama-server is asked for every token's (``n_probs`` = its vocabulary size), so every
    temperature's view is exact. Any other server is asked for :data:`WIDE_LOGPROBS`
    alternatives (20 if it refuses more) at ``temperature=1``, and views at other temperatures
    are computed from them only when they are raw (:meth:`RemoteClient.logprobs_fields`).

    Args:
        client: the server.
        prompt: non-empty text.
        temperatures: each ``>= 0``.
        top: rows per table (``<= N`` returned).
        seed: seeds the draws (one uniform shared by every temperature); ``None`` = random.
        params: samplers for the server to run at each temperature (llama-server only): each
            view then also shows the distribution after them (``processed``), from one
            ``post_sampling_probs`` request per temperature.

    Example: ``remote_next_token(RemoteClient("http://127.0.0.1:8080/v1"), "The cat", [0.5, 1])``
    """
    if not prompt:
        raise ValueError("the prompt is empty: give some text")
    temps = [check_temperature(t) for t in temperatures]
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    llama = client.server.is_llama_server
    if params is not None and not llama:
        raise ValueError("sampler options with --endpoint need a server that reports "
                         "probabilities after its own samplers (llama.cpp's llama-server); "
                         "leave them out, or run on a local model")
    fields, raw = client.logprobs_fields()
    sent = client.neutral_fields()
    body = {"prompt": prompt, "max_tokens": 1, "temperature": 1.0, **sent, **fields}
    n_vocab = client.n_vocab if llama else None
    if n_vocab is not None:
        data = client.completion({**body, "samplers": ["temperature"], "n_probs": n_vocab})
    else:
        data = _wide_request(client, body, top)
    choice = (data.get("choices") or [{}])[0]
    parsed = parse_logprobs(choice.get("logprobs"))
    if not parsed or not parsed[0].top:
        raise RemoteError(f"{client.base_url} returned no top_logprobs for the first token: "
                          "the server does not report log-probabilities")
    tokens = [t for t, _, _ in parsed[0].top]
    lps = [v for _, _, v in parsed[0].top]
    ids = [i for _, i, _ in parsed[0].top]
    token_ids = [int(i) for i in ids if i is not None] if None not in ids else None
    outside = max(0.0, 1.0 - sum(math.exp(v) for v in lps))
    exact = n_vocab is not None and len(tokens) >= n_vocab
    u = random.Random(seed).random()
    derivable = [t for t in temps if raw or t == 1.0]
    not_derived = [t for t in temps if t not in derivable]
    chain = None
    if params is not None and token_ids is not None:
        chain = llama_server_fields(params, client.server)[0].get("samplers")
    views = [_view(t, tokens, lps, u, top, exact=exact, token_ids=token_ids,
                   after=None if chain is None else _after_samplers(
                       client, prompt, params, t, seed, n_vocab or len(tokens)))
             for t in (derivable or [1.0])]
    if exact:
        note = (f"exact: the server returned every token's probability (n_probs = {n_vocab}), "
                "so each temperature's distribution is computed over the whole vocabulary")
    else:
        note = (f"top-{len(tokens)} approximation: {outside:.4f} of the mass at T = 1 lies "
                "outside the returned tokens; other temperatures renormalise over them")
    if not raw:
        note += ("; the server's logprobs are processed (not raw), so only T = 1 is shown: "
                 "other temperatures cannot be derived (pass --logprobs-raw if the server "
                 "returns raw logprobs, e.g. vLLM --logprobs-mode raw_logprobs)")
    return RemoteNextToken(client.model, client.base_url, prompt, seed, raw, len(tokens),
                           outside, views, not_derived, note, sent, exact, chain)


def _wide_request(client: RemoteClient, body: dict[str, Any], top: int) -> dict[str, Any]:
    wide = client.max_logprobs or max(top, WIDE_LOGPROBS)
    try:
        return client.completion({**body, "logprobs": wide})
    except RemoteError as exc:
        if exc.status is None or exc.status >= 500 or wide <= OPENAI_MAX_LOGPROBS:
            raise
        client.max_logprobs = OPENAI_MAX_LOGPROBS
        return client.completion({**body, "logprobs": OPENAI_MAX_LOGPROBS})


def _view(t: float, tokens: list[str], lps: list[float], u: float, top: int, *,
          exact: bool = False, token_ids: list[int] | None = None,
          after: dict[int, float] | None = None) -> RemoteTemperatureView:
    logp = np.asarray(lps, dtype=np.float64)  # (N,) sorted, likeliest first
    # Exact (every token returned): softmax(logp / T) is the distribution at T. Otherwise at
    # T = 1 the server's own numbers, at any other T the top-N renormalised.
    probs = np.exp(logp) if t == 1.0 and not exact else np.asarray(softmax(logp, t))
    shares = probs / probs.sum()
    h = max(0.0, float(entropy(shares)))
    if after is None or token_ids is None:
        pick = int(inverse_cdf(shares, u))  # T = 0: the one-hot softmax picks the first token
    else:  # the draw comes from the distribution after the server's samplers
        kept = sorted(after, key=lambda i: -after[i])  # (K,) ids, likeliest first
        p = np.asarray([after[i] for i in kept], dtype=np.float64)
        pick = token_ids.index(kept[int(inverse_cdf(p / p.sum(), u))])
    n = max(top, pick + 1)
    ids = None if token_ids is None else token_ids[:n]
    return RemoteTemperatureView(
        t, tokens[:n], lps[:n], probs[:n].tolist(), exact or t == 1.0, h, pick, ids,
        None if after is None or ids is None else [after.get(i, 0.0) for i in ids],
        None if after is None else len(after))


def _after_samplers(client: RemoteClient, prompt: str, params: SamplingParams | None,
                    t: float, seed: int, n_probs: int) -> dict[int, float]:
    """``{token id: probability}`` of every token the server's samplers keep at temperature
    ``t``: one ``post_sampling_probs`` request (llama-server)."""
    assert params is not None
    at_t = params.model_copy(update={"temperature": t})
    fields, _ = wire_fields(client, at_t)
    data = client.completion({"prompt": prompt, "max_tokens": 1, "seed": seed,
                              "temperature": _temperature(at_t), **fields,
                              "n_probs": n_probs, "post_sampling_probs": True})
    parsed = parse_logprobs((data.get("choices") or [{}])[0].get("logprobs"))
    if not parsed or not parsed[0].processed:
        raise RemoteError(f"{client.base_url} did not return probabilities after its samplers "
                          "(post_sampling_probs)")
    return {i: math.exp(v) for _, i, v in parsed[0].top if i is not None and v > -math.inf}


def check_settings(client: RemoteClient,
                   grid: Mapping[Any, SamplingParams]) -> dict[str, Any]:
    """Probe the server for every sampler setting in ``grid`` (cached on the client).

    Args:
        client: the server.
        grid: keyed by config name, or by ``(config name, temperature)`` as a sweep does.

    Returns:
        What a sweep records in its manifest and the CLI warns about: ``logprobs_raw``
        (bool); ``ignored`` (settings the server refused) and ``refused`` (``{field:
        message}``); ``neutral`` (``{field: value}`` sent for every sampler a config leaves
        off) and ``neutral_refused`` (``{field: message}``: samplers that could not be
        switched off, so the server's own default applies); ``sent`` (``{config: {field:
        value}}``: every sampler field each config's requests carry besides temperature and
        seed).
    """
    _, raw = client.logprobs_fields()
    ignored: set[str] = set()
    sent: dict[str, dict[str, Any]] = {}
    for key, params in grid.items():
        fields, refused = wire_fields(client, params)
        ignored.update(refused)
        sent[str(key[0] if isinstance(key, tuple) else key)] = fields
    names = sorted(ignored)
    return {"logprobs_raw": raw, "ignored": names,
            "refused": {k: client.refused.get(k, "") for k in names},
            "neutral": client.neutral_fields(), "neutral_refused": dict(client.neutral_refused),
            "sent": sent}
