"""llama.cpp's own C samplers, run on one row of logits through llama-cpp-python's ctypes API.

The reference for ``tests/test_sampling_llamacpp.py``. Build a :class:`Chain` from the
constructors below (each returns a llama.cpp sampler the chain then owns), feed it the history
with :meth:`Chain.accept`, and :meth:`Chain.apply` it to a ``(V,)`` row of logits; the
:class:`Step` it returns holds what the chain left: the logits of the tokens it kept (``-inf``
for the others) and, when the chain ended in a sampler that chooses (mirostat), the token.

Quirks of the C samplers (llama-cpp-python 0.3.36), handled here so the tests need not know:
some samplers shrink the candidate array (top-k, top-p, min-p, typical, mirostat), others mask
tokens to ``-inf`` in place (temperature 0, top-n-sigma), XTC moves the array's data pointer
forward, and only some set ``.p``. So a token is kept when it is still in the array with a
finite logit, and probabilities are recomputed here from those logits, in float64.

>>> with Chain(top_k(2)) as chain:
...     chain.apply([1.0, 3.0, 2.0, 0.0]).kept.tolist()
[False, True, True, False]
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pytest

# pytest collects this module's doctest too (--doctest-modules): skip it, not fail, without
# llama-cpp-python.
L: Any = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

# llama-cpp-python prints every llama.cpp log line (model loading is chatty) unless told not to.
logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

# One llama_token_data as numpy sees it, so a whole row is filled and read without a loop.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert TOKEN_DATA.itemsize == ctypes.sizeof(L.llama_token_data)

Sampler = Any  # a llama_sampler_p (ctypes pointer) that a Chain takes ownership of


# -- samplers, named and ordered as in llama.h -------------------------------------------------

def logit_bias(n_vocab: int, biases: dict[int, float]) -> Sampler:
    """Add ``biases[token]`` to each listed token's logit."""
    arr = (L.llama_logit_bias * len(biases))(
        *(L.llama_logit_bias(token=t, bias=b) for t, b in biases.items()))
    return L.llama_sampler_init_logit_bias(n_vocab, len(biases), arr)


def greedy() -> Sampler:
    return L.llama_sampler_init_greedy()


def dist(seed: int = 0) -> Sampler:
    return L.llama_sampler_init_dist(seed)


def top_k(k: int) -> Sampler:
    return L.llama_sampler_init_top_k(k)


def top_p(p: float, min_keep: int = 1) -> Sampler:
    return L.llama_sampler_init_top_p(p, min_keep)


def min_p(p: float, min_keep: int = 1) -> Sampler:
    return L.llama_sampler_init_min_p(p, min_keep)


def typical(p: float, min_keep: int = 1) -> Sampler:
    return L.llama_sampler_init_typical(p, min_keep)


def temp(t: float) -> Sampler:
    return L.llama_sampler_init_temp(t)


def temp_ext(t: float, delta: float, exponent: float) -> Sampler:
    """Dynamic temperature (tempscope's ``dynatemp_range`` = ``delta``)."""
    return L.llama_sampler_init_temp_ext(t, delta, exponent)


def xtc(probability: float, threshold: float, min_keep: int = 1, seed: int = 0) -> Sampler:
    return L.llama_sampler_init_xtc(probability, threshold, min_keep, seed)


def top_n_sigma(n: float) -> Sampler:
    return L.llama_sampler_init_top_n_sigma(n)


def mirostat(n_vocab: int, tau: float, eta: float, m: int = 100, seed: int = 0) -> Sampler:
    """Mirostat v1; it chooses the token itself (and updates ``mu`` in ``apply``)."""
    return L.llama_sampler_init_mirostat(n_vocab, seed, tau, eta, m)


def mirostat_v2(tau: float, eta: float, seed: int = 0) -> Sampler:
    """Mirostat v2; it chooses the token itself (and updates ``mu`` in ``apply``)."""
    return L.llama_sampler_init_mirostat_v2(seed, tau, eta)


def penalties(n_vocab: int, last_n: int, repeat: float = 1.0, freq: float = 0.0,
              present: float = 0.0) -> Sampler:
    """Repetition, frequency and presence penalties over the last ``last_n`` accepted tokens.

    This build takes ``n_vocab`` first (upstream's current header does not), and
    ``last_n = -1`` switches the penalties off rather than meaning "the whole context".
    """
    return L.llama_sampler_init_penalties(n_vocab, last_n, repeat, freq, present)


def dry(vocab: Vocab, multiplier: float, base: float, allowed_length: int, last_n: int,
        breakers: Sequence[str] = ()) -> Sampler:
    """DRY. Breakers are text, matched through ``vocab``'s detokenizer. In this build (no
    ``n_ctx_train`` argument) ``last_n = -1`` searches nothing: pass a real count."""
    encoded = [b.encode() for b in breakers]
    arr = (ctypes.c_char_p * len(encoded))(*encoded)
    return L.llama_sampler_init_dry(vocab.ptr, multiplier, base, allowed_length, last_n,
                                    arr, len(encoded))


# -- a vocabulary for DRY ------------------------------------------------------------------------

class Vocab:
    """A llama.cpp vocabulary loaded from a GGUF file (``vocab_only``: no weights).

    DRY needs one to turn its sequence breakers (text) into tokens. It also answers
    tempscope's ``Vocab`` protocol (``size``, ``eos_token_ids``, ``encode``, ``token_text``)
    from llama.cpp itself, so both sides see the same tokens. Close it after every chain
    that used it.
    """

    def __init__(self, path: Path) -> None:
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.vocab_only = True
        self._model = L.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load the vocabulary of {path}")
        self.ptr = L.llama_model_get_vocab(self._model)
        self.size = int(L.llama_vocab_n_tokens(self.ptr))
        eos = [int(L.llama_vocab_eos(self.ptr)), int(L.llama_vocab_eot(self.ptr))]
        self.eos_token_ids = sorted({t for t in eos if t >= 0})

    def piece(self, token: int) -> bytes:
        """The bytes token ``token`` stands for (special tokens as their text)."""
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, True)
        return buf.raw[:n]

    # tempscope's Vocab protocol (tempscope.sampling.vocab), answered by llama.cpp itself, so
    # both sides turn DRY's breakers into the same tokens.
    def token_text(self, token_id: int) -> str:
        return self.piece(token_id).decode("utf-8", errors="replace")

    def encode(self, text: str) -> list[int]:
        raw = text.encode()
        out = (L.llama_token * (len(raw) + 8))()
        n = L.llama_tokenize(self.ptr, raw, len(raw), out, len(out), False, False)
        if n < 0:
            raise RuntimeError(f"llama.cpp could not tokenize {text!r}")
        return list(out[:n])

    def close(self) -> None:
        if self._model:
            L.llama_model_free(self._model)
            self._model = None


# -- a chain and what it leaves ----------------------------------------------------------------

@dataclass
class Step:
    """What a chain left of one row.

    Attributes:
        logits: ``(V,)`` float32 by token id: the logits the chain left for the tokens it kept,
            ``-inf`` for every other token. llama.cpp can leave +inf (a temperature near 0)
            or NaN (``-inf / inf``); see :attr:`kept` and :attr:`probs`.
        selected: the token the chain chose, or ``None`` when it ended without a chooser.
    """

    logits: np.ndarray
    selected: int | None

    @property
    def kept(self) -> np.ndarray:
        """``(V,)`` bool: the tokens still possible (a NaN logit counts as removed)."""
        return self.logits > -np.inf

    @property
    def probs(self) -> np.ndarray:
        """``(V,)`` float64 softmax of the kept tokens' logits (0 for the others). A logit of
        +inf (a temperature near 0 divides into overflow) takes all the mass."""
        x = self.logits.astype(np.float64)
        kept = x > -np.inf
        out = np.zeros_like(x)
        if np.isposinf(x).any():
            kept = np.isposinf(x)
            out[kept] = 1 / kept.sum()
            return out
        e = np.exp(x[kept] - x[kept].max())
        out[kept] = e / e.sum()
        return out


class Chain:
    """A llama.cpp sampler chain that owns ``samplers`` and frees them on :meth:`close`.

    Use as a context manager. Stateful samplers (penalties, DRY, mirostat) keep their state
    between :meth:`apply` calls, as in generation.
    """

    def __init__(self, *samplers: Sampler) -> None:
        self.ptr = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        for s in samplers:
            if not s:
                raise ValueError("a llama.cpp sampler constructor returned NULL")
            L.llama_sampler_chain_add(self.ptr, s)

    def accept(self, tokens: Iterable[int]) -> None:
        """Tell every sampler these tokens were chosen (the history, in order)."""
        for t in tokens:
            L.llama_sampler_accept(self.ptr, int(t))

    def apply(self, logits: Sequence[float] | np.ndarray) -> Step:
        """Run the chain once on ``(V,)`` logits (``-inf`` allowed) and read back the result."""
        row = np.asarray(logits, dtype=np.float32)
        if row.ndim != 1:
            raise ValueError(f"one row of logits, shape (V,), got {row.shape}")
        v = row.shape[0]
        data = np.zeros(v, TOKEN_DATA)
        data["id"] = np.arange(v)
        data["logit"] = row
        cur = L.llama_token_data_array(
            data=data.ctypes.data_as(L.llama_token_data_p), size=v, selected=-1, sorted=False)
        L.llama_sampler_apply(self.ptr, ctypes.byref(cur))
        # XTC moves the data pointer forward instead of copying: read from where it points.
        start = int(ctypes.cast(cur.data, ctypes.c_void_p).value or 0) - data.ctypes.data
        first, size = start // TOKEN_DATA.itemsize, int(cur.size)
        if start % TOKEN_DATA.itemsize or not 0 <= first <= first + size <= v:
            raise RuntimeError(f"llama.cpp left the array at byte {start}, size {size} of {v}")
        left = data[first:first + size]
        out = np.full(v, -np.inf, dtype=np.float32)
        out[left["id"]] = left["logit"]
        selected = None if cur.selected < 0 else int(left["id"][cur.selected])
        return Step(out, selected)

    def close(self) -> None:
        if self.ptr:
            L.llama_sampler_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def run(samplers: Sequence[Sampler], logits: Sequence[float] | np.ndarray,
        history: Iterable[int] = ()) -> Step:
    """One chain, one history, one row: the common case in a line."""
    with Chain(*samplers) as chain:
        chain.accept(history)
        return chain.apply(logits)
