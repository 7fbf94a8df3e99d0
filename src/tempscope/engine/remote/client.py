"""A client for any OpenAI-compatible server: vLLM, llama.cpp's server, a hosted API, or
``tempscope serve``. The one module that talks HTTP; the rest of tempscope does not know which
engine answers.

What it does on top of plain HTTP:

- one request per row (its own temperature and seed), at most ``concurrency`` in flight;
- retries with exponential backoff and jitter on 429, 5xx, timeouts and dropped connections;
  other 4xx raise :class:`RemoteError` with the server's own message at once;
- feature detection: sampler fields beyond the OpenAI core (``top_k``, ``min_p``, ...) are
  probed once with a one-token request; a field the server rejects is reported, never silently
  dropped, and never sent again;
- explicit neutral values: every sampler the server accepts a field for and the user left off
  is sent switched off (:data:`NEUTRAL_FIELDS`), so the server's own defaults never shape the
  text unseen;
- llama.cpp's ``llama-server`` is recognised by its ``GET /props`` (:attr:`RemoteClient.server`)
  and spoken to in its own names (:mod:`tempscope.engine.remote.wire`): what it accepts is read from
  there, not probed, and its log-probabilities are raw (before its samplers) unless a request
  asks for ``post_sampling_probs``.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx

from tempscope.engine.remote.wire import LLAMA_SERVER_OFF, ServerInfo, server_info
from tempscope.errors import TempscopeError
from tempscope.sampling.registry import KNOBS

# Fields every OpenAI-compatible completions endpoint understands.
CORE_FIELDS = frozenset(
    {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "logprobs",
     "frequency_penalty", "presence_penalty", "logit_bias", "stream", "echo"}
)
# Sampler fields as the registry names them (vLLM's and llama.cpp's names, mostly); servers
# may or may not know them.
EXTRA_FIELDS = (*(k for k in KNOBS if k not in CORE_FIELDS), "sampler_order", "logprobs_mode")
# Each server-side sampler switched off, in the names servers use: sent for every setting the
# user leaves off. A server fills a field left out with its own default (llama.cpp and
# llama-cpp-python: top_k 40, top_p 0.95, min_p 0.05, llama-cpp-python repeat_penalty 1.1;
# vLLM: the model's generation_config.json), which would shape the text unseen. These are wire
# values, not tempscope's (where None means off): what each server reads as "off", declared by
# each knob of the registry (``Knob.wire_off``): top_k 0 (k <= 0 keeps every token on
# llama.cpp, llama-cpp-python, vLLM and tempscope serve), llama.cpp's repeat_penalty beside
# vLLM's repetition_penalty, older llama.cpp's tfs_z, llama-cpp-python's mirostat_mode.
NEUTRAL_FIELDS: Mapping[str, Any] = MappingProxyType(
    {name: value for knob in KNOBS.values() for name, value in knob.wire_off.items()})
# The other spelling of "off" for a server that refuses the first (vLLM before 0.8: top_k -1).
_NEUTRAL_FALLBACK: Mapping[str, Any] = MappingProxyType({"top_k": -1})
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Retries of a refused connection before the server has ever answered: a wrong port or a
# server not started fails in about a second, not after the whole backoff (~15 s); once it
# has answered, a refused connection (a restart) gets every retry.
FIRST_CONTACT_RETRIES = 2


class RemoteError(TempscopeError):
    """The server refused a request (4xx) or stayed unreachable after every retry.

    ``status`` is the HTTP status of the last answer; ``None`` when nothing answered.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RemoteStats:
    """What the client did: requests sent, retries, and the statuses that caused them."""

    requests: int = 0
    retries: int = 0
    retried_statuses: list[str] = field(default_factory=list)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


class RemoteClient:
    """Talks to one OpenAI-compatible ``/v1`` endpoint.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``; default ``$OPENAI_BASE_URL``.
        api_key: sent as ``Authorization: Bearer``; default ``$OPENAI_API_KEY``.
        model: model name to request; default the first of ``GET /models``.
        concurrency: most requests in flight at once (>= 1).
        max_retries: retries per request on 429/5xx/timeouts and dropped or refused
            connections (>= 0); a refused connection before the server has ever answered is
            retried at most :data:`FIRST_CONTACT_RETRIES` times.
        timeout: seconds per request.
        backoff: first retry delay in seconds; doubles each retry, with jitter.
        logprobs_raw: the caller asserts the server's logprobs are raw (T = 1, no samplers),
            e.g. vLLM started with ``--logprobs-mode raw_logprobs``; otherwise they count as
            raw only when the server accepts ``logprobs_mode: "raw"`` per request.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        model: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 120.0,
        backoff: float = 0.5,
        logprobs_raw: bool = False,
    ) -> None:
        url = base_url or _env("OPENAI_BASE_URL")
        if not url:
            raise RemoteError(
                "no endpoint: pass --endpoint URL (e.g. http://127.0.0.1:8000/v1) or set "
                "OPENAI_BASE_URL"
            )
        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"endpoint must start with http:// or https://, got {url!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = url.rstrip("/")
        key = api_key or _env("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self._answered = False  # the server has sent a response (any status)
        self.backoff = backoff
        self.stats = RemoteStats()
        self._model = model
        self._supported: dict[str, bool] = {}
        self.refused: dict[str, str] = {}  # field -> the server's message when it refused it
        self._neutral: dict[str, Any] | None = None  # learnt: NEUTRAL_FIELDS it accepts
        self.neutral_refused: dict[str, str] = {}  # neutral field -> the server's message
        self.logprobs_raw = logprobs_raw
        self.max_logprobs: int | None = None  # learnt: the most logprobs the server allows
        self._server: ServerInfo | None = None  # learnt: which server answers
        self._n_vocab: int | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model(self) -> str:
        """The model name sent with each request (asked from the server once if not given)."""
        if self._model is None:
            models = self.models()
            if not models:
                raise RemoteError(f"{self.base_url}/models lists no model: pass --remote-model")
            self._model = models[0]
        return self._model

    def models(self) -> list[str]:
        """``GET /models``: the ids the server serves."""
        data = self._request("GET", "/models")
        for m in data.get("data", []):
            meta = m.get("meta") if isinstance(m, dict) else None
            if isinstance(meta, dict) and isinstance(meta.get("n_vocab"), int):
                self._n_vocab = int(meta["n_vocab"])  # llama-server says its vocabulary size
        return [str(m["id"]) for m in data.get("data", [])]

    @property
    def server(self) -> ServerInfo:
        """Which server answers (asked once): llama-server when ``GET /props`` beside ``/v1``
        lists its generation settings, else a plain OpenAI-compatible server."""
        with self._lock:
            if self._server is not None:
                return self._server
        root = self.base_url.removesuffix("/v1")
        try:
            props: dict[str, Any] | None = self._request("GET", root + "/props")
        except RemoteError as exc:
            if exc.status is None:
                raise  # unreachable: that says nothing about which server it is
            props = None  # 404 and friends: not llama-server
        except ValueError:  # an answer that is not JSON
            props = None
        info = server_info(props)
        with self._lock:
            self._server = info
        return info

    @property
    def n_vocab(self) -> int | None:
        """The model's vocabulary size when the server says it (llama-server's ``/models``)."""
        if self._n_vocab is None and self.server.is_llama_server:
            self.models()
        return self._n_vocab

    def completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /completions`` with retries; ``model`` is filled in when missing."""
        payload = {"model": self.model, **body}
        return self._request("POST", "/completions", json=payload)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """Run ``fn`` over ``items`` with at most ``concurrency`` in flight; keeps order."""
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- feature detection ------------------------------------------------------------------

    def supports(self, name: str, value: Any) -> bool:
        """Whether the server accepts the sampler field ``name`` (probed once, then cached).

        A 4xx whose message names the field means "not supported". A 2xx means accepted: the
        server took the field, which is all an HTTP client can know (it cannot see whether the
        engine applied it).
        """
        if name in CORE_FIELDS:
            return True
        if self.server.is_llama_server:  # it lists what it takes (and ignores the rest)
            return name in self.server.accepts
        with self._lock:
            if name in self._supported:
                return self._supported[name]
        why = self._refusal({name: value})
        with self._lock:
            self._supported[name] = why is None
            if why is not None:
                self.refused[name] = why
        return why is None

    def neutral_fields(self) -> dict[str, Any]:
        """The :data:`NEUTRAL_FIELDS` the server accepts: what a request carries for every
        sampler the user left off (probed once, then cached).

        One probe with all of them; when the server refuses that, one per field (``top_k``
        tried again as ``-1``), and the refusals are kept in ``neutral_refused``. A core
        OpenAI field (``top_p``, the penalties) is always sent.

        Returns:
            ``{wire field: value}``, a copy the caller may change.
        """
        with self._lock:
            if self._neutral is not None:
                return dict(self._neutral)
        if self.server.is_llama_server:  # llama.cpp's names, for every sampler it lists
            accepts = self.server.accepts
            off = {k: v for k, v in LLAMA_SERVER_OFF.items() if k in accepts}
            with self._lock:
                self.neutral_refused.update({k: "not among the fields its /props lists"
                                             for k in LLAMA_SERVER_OFF if k not in accepts})
                self._neutral = off
            return dict(off)
        accepted = dict(NEUTRAL_FIELDS)
        if self._refusal(accepted) is not None:
            refused: dict[str, str] = {}
            for name, value in NEUTRAL_FIELDS.items():
                if name in CORE_FIELDS:
                    continue
                why = self._refusal({name: value})
                if why is not None and name in _NEUTRAL_FALLBACK:
                    other = _NEUTRAL_FALLBACK[name]
                    if self._refusal({name: other}) is None:
                        value, why = other, None
                if why is None:
                    accepted[name] = value
                else:
                    del accepted[name]
                    refused[name] = why
            with self._lock:
                self.neutral_refused.update(refused)
        with self._lock:
            self._neutral = accepted
        return dict(accepted)

    def _refusal(self, fields: Mapping[str, Any]) -> str | None:
        """One one-token request with ``fields``: ``None`` when the server takes it, else the
        message of its 4xx refusal."""
        probe = {"prompt": "Hello", "max_tokens": 1, "temperature": 0, **fields}
        try:
            self.completion(probe)
        except RemoteError as exc:
            if exc.status is None or exc.status >= 500 or exc.status in RETRY_STATUS:
                raise  # unreachable or failing: that says nothing about the fields
            return str(exc)
        return None

    def logprobs_fields(self) -> tuple[dict[str, Any], bool]:
        """Fields that ask for raw logprobs, and whether the logprobs will be raw.

        Raw means log p at T = 1 before any sampler: asserted by ``logprobs_raw``, or obtained
        with ``logprobs_mode: "raw"`` when the server accepts it (tempscope's own server).
        """
        if self.logprobs_raw:
            return {}, True
        if self.server.is_llama_server:  # its logprobs come before its samplers
            return {"post_sampling_probs": False}, True
        if self.supports("logprobs_mode", "raw"):
            return {"logprobs_mode": "raw"}, True
        return {}, False

    def split_fields(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Keep the fields the server supports; return them and the names it does not."""
        kept: dict[str, Any] = {}
        ignored: list[str] = []
        for name, value in fields.items():
            if value is None:
                continue
            if self.supports(name, value):
                kept[name] = value
            else:
                ignored.append(name)
        return kept, ignored

    # -- transport --------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        attempt = 0
        while True:
            with self._lock:
                self.stats.requests += 1
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                reason = type(exc).__name__
                limit = self.max_retries
                if isinstance(exc, httpx.ConnectError) and not self._answered:
                    limit = min(limit, FIRST_CONTACT_RETRIES)
                if attempt >= limit:
                    raise RemoteError(
                        f"{self.base_url} unreachable after {attempt + 1} tries ({reason}): is "
                        "the server running, and is the URL right (it usually ends in /v1)?"
                    ) from None
            else:
                self._answered = True
                if response.status_code < 400:
                    data: dict[str, Any] = response.json()
                    return data
                reason = str(response.status_code)
                if response.status_code not in RETRY_STATUS or attempt >= self.max_retries:
                    raise RemoteError(
                        f"{method} {_where(self.base_url, path)} failed with HTTP "
                        f"{response.status_code}: {_error_message(response)}",
                        status=response.status_code,
                    )
            with self._lock:
                self.stats.retries += 1
                self.stats.retried_statuses.append(reason)
            delay = self.backoff * (2**attempt) * (0.5 + random.random())
            time.sleep(min(delay, 30.0))
            attempt += 1


def _where(base_url: str, path: str) -> str:
    return path if path.startswith(("http://", "https://")) else base_url + path


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if "detail" in body:
            return str(body["detail"])[:300]
    return str(body)[:300]


def top_logprobs_to_table(top: Mapping[str, float]) -> tuple[list[str], list[float], float]:
    """Sort a ``{token: logprob}`` map; return tokens, probabilities and the mass outside it.

    >>> top_logprobs_to_table({"a": math.log(0.5), "b": math.log(0.25)})
    (['a', 'b'], [0.5, 0.25], 0.25)
    """
    items = sorted(top.items(), key=lambda kv: -kv[1])
    probs = [math.exp(lp) for _, lp in items]
    return [t for t, _ in items], probs, max(0.0, 1.0 - sum(probs))
