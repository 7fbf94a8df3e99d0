"""Logit processors that use the history: repetition, frequency and presence penalties, the
logit bias, banned words (``bad_words``) and the end-of-sequence ban of ``min_tokens``.

The penalties read the history as ``(B, V)`` counts: how many times each token occurs in the
row's prompt plus what it generated so far (llama.cpp style; vLLM and OpenAI count only
generated tokens for the frequency and presence penalties). They take a
:class:`~tempscope.sampling.base.HistoryView` (read at every ``apply``, so the counts are always
current) or a fixed ``(B, V)`` tensor. ``penalty_last_n`` narrows what they count to each row's
last N tokens, as llama.cpp's ``repeat_last_n`` does: -1 (the default) counts the whole history,
0 counts nothing (the penalties do nothing), N > 0 the last N tokens, prompt included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tempscope.sampling.base import HistoryView, RowSampler, check_range, column, per_row

if TYPE_CHECKING:
    from tempscope.sampling.build import BuildContext
    from tempscope.sampling.registry import SamplerSpec
    from tempscope.sampling.vocab import Vocab


def _check_counts(counts: Tensor | HistoryView) -> Tensor | HistoryView:
    if isinstance(counts, Tensor) and counts.ndim != 2:
        raise ValueError(f"counts must be (B, V), got shape {tuple(counts.shape)}")
    return counts


def window_counts(ids: Sequence[Sequence[int]], last_n: Sequence[int],
                  vocab_size: int, device: torch.device | str = "cpu") -> Tensor:
    """``(B, V)`` float32 counts of each row's last ``last_n[row]`` tokens (-1: all of them,
    0: none).

    >>> window_counts([[1, 2, 1, 3]], [2], 4).tolist()
    [[0.0, 1.0, 0.0, 1.0]]
    """
    rows: list[int] = []
    tokens: list[int] = []
    for row, (seq, n) in enumerate(zip(ids, last_n, strict=True)):
        kept = list(seq) if n < 0 else list(seq[len(seq) - min(n, len(seq)):])
        rows += [row] * len(kept)
        tokens += kept
    counts = torch.zeros(len(ids), vocab_size, device=device)  # (B, V)
    if tokens:
        counts.index_put_((torch.tensor(rows, device=device),
                           torch.tensor(tokens, device=device)),
                          torch.ones(len(tokens), device=device), accumulate=True)
    return counts


class _Penalty(RowSampler):
    """A penalty's per-row value, its view of the history and its window."""

    row_attrs = ("penalty", "counts", "penalty_last_n")

    def __init__(self, penalty: float | Tensor, counts: Tensor | HistoryView, low: float,
                 high: float, penalty_last_n: int | Tensor = -1, **open_: bool) -> None:
        self.penalty = per_row(penalty)
        check_range(self.name, self.penalty, low, high, **open_)
        self.counts = _check_counts(counts)
        self.penalty_last_n = per_row(penalty_last_n, dtype=torch.int64)
        check_range("penalty_last_n", self.penalty_last_n, -1, math.inf, high_open=True)
        if not isinstance(counts, HistoryView) and bool((self.penalty_last_n >= 0).any()):
            raise ValueError("penalty_last_n needs the history's token order: pass a "
                             "HistoryView, not fixed (B, V) counts")

    def seen(self) -> Tensor:
        """``(B, V)`` counts of each token in each row's history (its window)."""
        if not isinstance(self.counts, HistoryView):
            return self.counts
        if bool((self.penalty_last_n < 0).all()):  # the whole history: the shared table
            return self.counts.counts
        b = len(self.counts.rows)
        last_n = self.penalty_last_n.expand(b).tolist()
        h = self.counts.history
        return window_counts(self.counts.ids, last_n, h.vocab_size, h.device)


class RepetitionPenalty(_Penalty):
    """CTRL / transformers repetition penalty over tokens seen in the history.

    A seen token's logit ``l`` becomes ``l / r`` if ``l > 0`` else ``l * r``; ``r > 1``
    discourages repeats, ``r = 1`` is a no-op.

    Args:
        penalty: ``r > 0``, a number or ``(B,)`` tensor. Practical 1.05-1.3.
        history: the rows' history (or fixed ``(B, V)`` counts).
        penalty_last_n: count only the last N tokens, ``(B,)`` or a number; -1 = all, 0 = none
            (needs a ``HistoryView``).

    >>> h = HistoryView.of([[2, 0, 1]], 4)
    >>> RepetitionPenalty(2.0, h, penalty_last_n=1).apply(torch.tensor([[2.0, 2.0, 2.0, 2.0]]))
    tensor([[2., 1., 2., 2.]])
    """

    name = "repetition_penalty"

    def __init__(self, penalty: float | Tensor, history: Tensor | HistoryView,
                 penalty_last_n: int | Tensor = -1) -> None:
        super().__init__(penalty, history, 0, math.inf, penalty_last_n, low_open=True,
                         high_open=True)

    def apply(self, logits: Tensor) -> Tensor:
        r = column(self.penalty, logits)  # (B, 1)
        penalised = torch.where(logits > 0, logits / r, logits * r)
        return torch.where(self.seen() > 0, penalised, logits)

    def __repr__(self) -> str:
        return f"RepetitionPenalty({self.penalty.tolist()}{_window(self.penalty_last_n)})"


class FrequencyPenalty(_Penalty):
    """OpenAI frequency penalty: ``l -= f * count``. Args: ``f`` in ``[-2, 2]``; the history
    (or ``(B, V)`` counts); ``penalty_last_n`` as :class:`RepetitionPenalty`."""

    name = "frequency_penalty"

    def __init__(self, penalty: float | Tensor, history: Tensor | HistoryView,
                 penalty_last_n: int | Tensor = -1) -> None:
        super().__init__(penalty, history, -2, 2, penalty_last_n)

    def apply(self, logits: Tensor) -> Tensor:
        return logits - column(self.penalty, logits) * self.seen()

    def __repr__(self) -> str:
        return f"FrequencyPenalty({self.penalty.tolist()}{_window(self.penalty_last_n)})"


class PresencePenalty(_Penalty):
    """OpenAI presence penalty: ``l -= p`` once for every token seen. Args: ``p`` in
    ``[-2, 2]``; the history (or ``(B, V)`` counts); ``penalty_last_n`` as
    :class:`RepetitionPenalty`."""

    name = "presence_penalty"

    def __init__(self, penalty: float | Tensor, history: Tensor | HistoryView,
                 penalty_last_n: int | Tensor = -1) -> None:
        super().__init__(penalty, history, -2, 2, penalty_last_n)

    def apply(self, logits: Tensor) -> Tensor:
        return logits - column(self.penalty, logits) * (self.seen() > 0).to(logits.dtype)

    def __repr__(self) -> str:
        return f"PresencePenalty({self.penalty.tolist()}{_window(self.penalty_last_n)})"


def _window(last_n: Tensor) -> str:
    return "" if bool((last_n < 0).all()) else f", penalty_last_n={last_n.tolist()}"


class LogitBias(RowSampler):
    """Add a fixed bias to chosen tokens' logits (OpenAI ``logit_bias``).

    Args:
        bias: ``(B, V)`` or ``(V,)`` dense biases, finite.
    """

    name = "logit_bias"
    row_attrs = ("bias",)

    def __init__(self, bias: Tensor) -> None:
        if not bool(torch.isfinite(bias).all()):
            raise ValueError("logit_bias values must be finite numbers in [-100, 100]")
        self.bias = bias

    @classmethod
    def from_dicts(cls, biases: list[dict[int, float] | None], vocab_size: int,
                   device: torch.device | str = "cpu") -> LogitBias:
        """Build the dense ``(B, V)`` bias from one ``{token_id: bias}`` dict per row."""
        dense = torch.zeros(len(biases), vocab_size, dtype=torch.float32)
        for row, entries in enumerate(biases):
            for token, value in (entries or {}).items():
                if not 0 <= token < vocab_size:
                    raise ValueError(
                        f"logit_bias token id {token} is outside the vocabulary [0, {vocab_size})"
                    )
                dense[row, token] = value
        return cls(dense.to(device))

    def apply(self, logits: Tensor) -> Tensor:
        return logits + self.bias.to(logits.device)

    def __repr__(self) -> str:
        return f"LogitBias(nonzero={int((self.bias != 0).sum())})"


def build_logit_bias(spec: SamplerSpec, ctx: BuildContext) -> list[Any]:
    """The registry's builder: one dense ``(B, V)`` bias for the rows that set one."""
    biases = [p.logit_bias for p in ctx.params]
    if not any(biases):
        return []
    return [LogitBias.from_dicts(biases, ctx.vocab_size, ctx.device)]


def _word_variants(word: str, vocab: Vocab) -> list[list[int]]:
    """vLLM's reading of a bad word: its tokens, and those of ``" " + word`` when that is a
    different sequence of the same length (so both spellings a tokenizer makes are banned)."""
    bare = vocab.encode(word.lstrip())
    out = [bare] if bare else []
    try:
        spaced = vocab.encode(" " + word.lstrip())
    except ValueError:  # a vocabulary that cannot spell a space (a list of words)
        return out
    if spaced and (not bare or (spaced[0] != bare[0] and len(spaced) == len(bare))):
        out.append(spaced)
    return out


class BadWords(RowSampler):
    """Words or phrases that can never be produced (vLLM's ``bad_words``).

    Each word is tokenized as written (leading spaces stripped) and with one leading space.
    A one-token word's token is always banned; for a longer one, its last token is banned
    whenever the row's generated tokens end with the word's other tokens. Like vLLM, only
    generated tokens count (a word begun in the prompt is not completed by the ban), and a word
    the tokenizer spells differently in context can still appear.

    Args:
        bad_words: one list of words per row (empty = none).
        vocab: the tokenizer (``encode`` without special tokens).
        history: the rows' tokens so far.
    """

    name = "bad_words"
    row_attrs = ("sequences", "history")

    def __init__(self, bad_words: Sequence[Sequence[str]], *, vocab: Vocab,
                 history: HistoryView) -> None:
        self.sequences = [[seq for word in words for seq in _word_variants(word, vocab)]
                          for words in bad_words]
        self.history = history
        if len(self.sequences) != len(history.rows):
            raise ValueError(f"bad_words: got {len(self.sequences)} lists for "
                             f"{len(history.rows)} rows")

    def apply(self, logits: Tensor) -> Tensor:
        rows: list[int] = []
        tokens: list[int] = []
        h = self.history.history
        for row, (sequences, slot) in enumerate(zip(self.sequences, self.history.rows,
                                                    strict=True)):
            generated = h.ids[slot][h.n_prompt[slot]:]
            for seq in sequences:
                head = seq[:-1]
                if len(head) <= len(generated) and generated[len(generated) - len(head):] == head:
                    rows.append(row)
                    tokens.append(seq[-1])
        if not rows:
            return logits
        out = logits.clone()
        out[torch.tensor(rows), torch.tensor(tokens)] = -math.inf
        return out

    def __repr__(self) -> str:
        return f"BadWords({self.sequences})"


class MinTokens(RowSampler):
    """No end of sequence before ``min_tokens`` generated tokens (vLLM's ``min_tokens``): the
    end-of-sequence tokens get ``-inf`` until then. (Stop strings are not matched before then
    either: the generation loop's part.)

    Args:
        min_tokens: an int or ``(B,)`` int tensor, ``>= 0``.
        vocab: gives ``eos_token_ids``.
        history: counts each row's generated tokens.
    """

    name = "min_tokens"
    row_attrs = ("min_tokens", "history")

    def __init__(self, min_tokens: int | Tensor, *, vocab: Vocab, history: HistoryView) -> None:
        self.min_tokens = per_row(min_tokens, dtype=torch.int64)
        check_range("min_tokens", self.min_tokens, 0, math.inf, high_open=True)
        self.eos = sorted(set(vocab.eos_token_ids))
        self.history = history

    def apply(self, logits: Tensor) -> Tensor:
        if not self.eos:
            return logits
        done = torch.tensor(self.history.n_generated, device=logits.device)  # (B,)
        early = (done < self.min_tokens.to(logits.device)).reshape(-1, 1)  # (B, 1)
        if not bool(early.any()):
            return logits
        ban = torch.zeros_like(logits, dtype=torch.bool)
        ban[:, self.eos] = True
        out = logits.masked_fill(early & ban, -math.inf)
        # A row whose every finite token is an end of sequence keeps them (one must survive).
        return torch.where(torch.isfinite(out).any(dim=-1, keepdim=True), out, logits)

    def __repr__(self) -> str:
        return f"MinTokens({self.min_tokens.tolist()})"
