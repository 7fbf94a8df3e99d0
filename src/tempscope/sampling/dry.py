"""DRY, "don't repeat yourself" (pi6am's sampler from KoboldCpp, as llama.cpp implements it).

A token that would extend a repeat, of length ``L >= allowed_length``, of an earlier stretch
of the row's history gets ``multiplier * base ** (L - allowed_length)`` subtracted from its
logit. Sequence breakers (strings such as ``"\\n"``) end a repeat: matching never reaches
back past the last breaker in the history, and a token that is a whole breaker by itself is
never penalised. Matching follows llama.cpp's ``llama_sampler_dry_apply`` step by step
(restart sequences, the reverse Z-algorithm, the exponent clamp), in O(n) per row.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tempscope.sampling.base import HistoryView, RowSampler, check_range, per_row
from tempscope.sampling.vocab import Vocab

DEFAULT_SEQUENCE_BREAKERS: tuple[str, ...] = ("\n", ":", '"', "*")  # llama.cpp's default
_MAX_BREAKER_CHARS = 40  # llama.cpp truncates longer breakers
_MAX_TAIL_TOKENS = 20  # and clamps a breaker's tail tokens, which keeps step 1 O(n)
_FLOAT_MAX_LOG = 88.7228391  # ln(float32 max): the exponent clamp that keeps base**x finite


@dataclass(frozen=True)
class Restarts:
    """One row's processed sequence breakers (llama.cpp's ``dry_processed_breakers``).

    ``tails[head]`` lists the token sequences that, after ``head``, complete a breaker (an
    empty tail: ``head``'s text contains a whole breaker); ``singles`` holds those heads.
    """

    tails: dict[int, tuple[tuple[int, ...], ...]]
    singles: frozenset[int]

    @classmethod
    def of_tokens(cls, breakers: Sequence[Sequence[int]]) -> Restarts:
        """Breakers given as token sequences (llama.cpp's ``llama_sampler_init_dry_testing``)."""
        tails: dict[int, list[tuple[int, ...]]] = {}
        for seq in breakers:
            if seq:
                tails.setdefault(int(seq[0]), []).append(tuple(int(t) for t in seq[1:]))
        return cls({h: tuple(t) for h, t in tails.items()},
                   frozenset(h for h, ts in tails.items() if () in ts))


class _VocabCache:
    """Per vocabulary: every token's text (read once), each breaker's token sequences and
    each list of breakers' :class:`Restarts` (rows nearly always share one list)."""

    def __init__(self, vocab: Vocab) -> None:
        self.texts = [vocab.token_text(i) for i in range(vocab.size)]
        self.sequences: dict[str, dict[int, list[tuple[int, ...]]]] = {}
        self.restarts: dict[tuple[str, ...], Restarts] = {}


_CACHES: weakref.WeakKeyDictionary[Vocab, _VocabCache] = weakref.WeakKeyDictionary()


def _cache_of(vocab: Vocab) -> _VocabCache:
    try:
        cache = _CACHES.get(vocab)
        if cache is None:
            cache = _CACHES[vocab] = _VocabCache(vocab)
        return cache
    except TypeError:  # not weak-referenceable or not hashable: no caching
        return _VocabCache(vocab)


def _breaker_sequences(vocab: Vocab, cache: _VocabCache,
                       breaker: str) -> dict[int, list[tuple[int, ...]]]:
    """llama.cpp's ``get_overlapping_token_sequences``: every token whose text contains
    ``breaker`` (empty tail), or ends with a prefix of it (tail = the rest, encoded)."""
    found = cache.sequences.get(breaker)
    if found is not None:
        return found
    out: dict[int, list[tuple[int, ...]]] = {}
    first = breaker[0]
    for token, word in enumerate(cache.texts):
        if breaker in word:
            out.setdefault(token, []).append(())
            continue
        pos = word.find(first)
        while pos != -1:
            i = 1
            while i < len(breaker) and pos + i < len(word) and word[pos + i] == breaker[i]:
                i += 1
            if pos + i == len(word):  # the word ends with breaker[:i]
                tail = tuple(vocab.encode(breaker[i:]))[:_MAX_TAIL_TOKENS]
                if tail not in out.setdefault(token, []):
                    out[token].append(tail)
            pos = word.find(first, pos + 1)
    cache.sequences[breaker] = out
    return out


def restarts_of(vocab: Vocab, breakers: Sequence[str]) -> Restarts:
    """Process breaker strings for ``vocab`` as llama.cpp does (cached per vocabulary).

    Empty breakers are skipped and longer ones cut to 40 characters, as in llama.cpp.
    """
    cache = _cache_of(vocab)
    key = tuple(breakers)
    found = cache.restarts.get(key)
    if found is not None:
        return found
    tails: dict[int, list[tuple[int, ...]]] = {}
    for text in breakers:
        if not text:
            continue
        for head, seqs in _breaker_sequences(vocab, cache, text[:_MAX_BREAKER_CHARS]).items():
            merged = tails.setdefault(head, [])
            merged.extend(s for s in seqs if s not in merged)
    found = cache.restarts[key] = Restarts(
        {h: tuple(t) for h, t in tails.items()},
        frozenset(h for h, ts in tails.items() if () in ts))
    return found


def repeat_lengths(window: Sequence[int], restarts: Restarts,
                   allowed_length: int) -> dict[int, int]:
    """For each token that would extend a repeat of length ``>= allowed_length``, the longest
    such repeat (llama.cpp's steps 1-3; ``window`` is the history it looks at, oldest first).

    A repeat is a stretch ending at some earlier position that equals the stretch ending at the
    last token; the token after that earlier position would extend it. Repeats never reach
    back past the end of the most recent restart sequence.
    """
    n = len(window)
    if n <= allowed_length:
        return {}
    if allowed_length > 0 and window.count(window[-1]) < 2:  # the usual case: no match at all
        return {}
    rev = list(reversed(window))  # rev[i]: the token i places from the end (llama's rat(i))
    # Step 1: the most recent restart sequence caps the repeat length.
    rep_limit = n
    for i, token in enumerate(rev):
        tails = restarts.tails.get(token)
        if tails is None:
            continue
        longest = -1
        for tail in tails:
            size = len(tail)
            if longest < size <= i and all(tail[o] == rev[i - o - 1] for o in range(size)):
                longest = size
        if longest >= 0:
            rep_limit = i - longest
            break
    if rep_limit < allowed_length:
        return {}
    # Step 2: Z-algorithm on the reversed window. count[n - 1 - k] is how far the stretch
    # ending k tokens before the end matches the stretch ending at the end (capped).
    count = [0] * n
    last = n - 1
    lt = rt = 0
    for k in range(1, n):
        if k > rt:  # outside the current Z-box: compare directly
            m = 0
            while m + k < n and rev[m] == rev[m + k]:
                m += 1
            count[last - k] = min(m, rep_limit)
            if m > 0:
                lt, rt = k, k + m - 1
        else:  # inside the box: reuse the mirrored value, extending past the box if needed
            p = k - lt
            right = rt - k + 1
            if count[last - p] < right:
                count[last - k] = min(count[last - p], rep_limit)
            else:
                i = rt + 1
                while i < n and rev[i] == rev[i - k]:
                    i += 1
                count[last - k] = min(i - k, rep_limit)
                lt, rt = k, i - 1
    # Step 3: the token after each long-enough match would extend it.
    out: dict[int, int] = {}
    for i in range(n - 1):
        length = count[i]
        if length >= allowed_length:
            token = window[i + 1]
            if out.get(token, -1) < length:
                out[token] = length
    return out


class DRY(RowSampler):
    """Subtract ``multiplier * base ** (L - allowed_length)`` from each token that would
    extend a repeat of length ``L >= allowed_length``.

    Args:
        multiplier: per row, ``>= 0``; 0 = off. Practical 0.8.
        base: per row, ``>= 1``. Practical 1.75.
        allowed_length: per row, an int ``>= 0``: repeats up to this long are free. Practical 2.
        penalty_last_n: per row, an int: how many of the latest tokens (prompt included) to
            search; ``-1`` = the whole history, ``0`` = off.
        sequence_breakers: one list of strings per row (llama.cpp's default
            :data:`DEFAULT_SEQUENCE_BREAKERS`).
        vocab: the tokenizer, to find which tokens start or contain a breaker.
        history: the rows' token ids so far, read at each ``apply``.

    Boundary choices: the exponent is clamped so ``base ** x`` stays within float32 (as in
    llama.cpp); a ``-inf`` logit stays ``-inf``.

    >>> from tempscope.sampling.vocab import byte_vocab
    >>> h = HistoryView.of([[ord(c) for c in "abcab"]], 256)
    >>> dry = DRY(1.0, 1.75, 2, -1, sequence_breakers=[[]], vocab=byte_vocab(), history=h)
    >>> float(dry.apply(torch.zeros(1, 256))[0, ord("c")])  # "ab" again: "c" would extend it
    -1.0
    """

    name = "dry"
    local = False  # it looks tokens up by id
    row_attrs = ("multiplier", "base", "allowed_length", "penalty_last_n", "sequence_breakers",
                 "restarts", "history")

    def __init__(self, multiplier: float | Tensor, base: float | Tensor = 1.75,
                 allowed_length: int | Tensor = 2, penalty_last_n: int | Tensor = -1, *,
                 sequence_breakers: Sequence[Sequence[str]], vocab: Vocab,
                 history: HistoryView) -> None:
        self.multiplier = per_row(multiplier)
        self.base = per_row(base)
        self.allowed_length = per_row(allowed_length, dtype=torch.int64)
        self.penalty_last_n = per_row(penalty_last_n, dtype=torch.int64)
        check_range("dry_multiplier", self.multiplier, 0, math.inf, high_open=True)
        check_range("dry_base", self.base, 1, math.inf, high_open=True)
        check_range("dry_allowed_length", self.allowed_length, 0, math.inf, high_open=True)
        check_range("dry_penalty_last_n", self.penalty_last_n, -1, math.inf, high_open=True)
        if len(sequence_breakers) != len(history.rows):
            raise ValueError(f"got {len(sequence_breakers)} lists of sequence breakers for "
                             f"{len(history.rows)} rows: give one list per row")
        self.sequence_breakers = [list(b) for b in sequence_breakers]
        self.restarts = [restarts_of(vocab, b) for b in self.sequence_breakers]
        self.history = history

    def penalties(self, b: int) -> dict[tuple[int, int], float]:
        """``{(row, token): amount}`` to subtract at this step, for ``b`` rows."""
        if b != len(self.history.rows):
            raise ValueError(f"DRY holds the history of {len(self.history.rows)} rows, got "
                             f"logits for {b}")
        mult = self.multiplier.expand(b).tolist()
        base = self.base.expand(b).tolist()
        allowed = self.allowed_length.expand(b).tolist()
        last_n = self.penalty_last_n.expand(b).tolist()
        out: dict[tuple[int, int], float] = {}
        for row, ids in enumerate(self.history.ids):
            if mult[row] == 0 or last_n[row] == 0:
                continue
            window = ids if last_n[row] < 0 else ids[max(len(ids) - last_n[row], 0):]
            restarts = self.restarts[row]
            # int() truncates as llama.cpp's float-to-int does; 0 means "no clamp" there too.
            max_exp = int(_FLOAT_MAX_LOG / math.log(base[row])) if base[row] > 1.000001 else 0
            for token, length in repeat_lengths(window, restarts, allowed[row]).items():
                if token in restarts.singles:  # a breaker by itself is never penalised
                    continue
                exponent = length - allowed[row]
                if max_exp > 0:
                    exponent = min(exponent, max_exp)
                out[row, token] = mult[row] * base[row] ** exponent
        return out

    def apply(self, logits: Tensor) -> Tensor:
        found = self.penalties(logits.shape[0])
        if not found:
            return logits
        rows, tokens = zip(*found, strict=True)
        index = (torch.tensor(rows, device=logits.device),
                 torch.tensor(tokens, device=logits.device))
        amounts = torch.tensor(list(found.values()), dtype=logits.dtype, device=logits.device)
        return logits.index_put(index, logits[index] - amounts)  # (row, token) pairs are unique

    def __repr__(self) -> str:
        return (f"DRY(multiplier={self.multiplier.tolist()}, base={self.base.tolist()}, "
                f"allowed_length={self.allowed_length.tolist()}, "
                f"penalty_last_n={self.penalty_last_n.tolist()})")
