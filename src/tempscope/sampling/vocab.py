"""The little a sampler needs from a tokenizer: ``Vocab``, and a small implementation of it.

DRY turns its sequence breakers (strings) into token sequences the way llama.cpp does, which
needs each token's text and a way to encode a string; ``min_tokens`` needs the end-of-sequence
ids. Any tokenizer wrapper can provide these members; :class:`ListVocab` is a plain one for
tests and examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Vocab(Protocol):
    """A tokenizer as samplers see it."""

    @property
    def size(self) -> int:
        """How many token ids there are (``V``)."""
        ...

    @property
    def eos_token_ids(self) -> Sequence[int]:
        """The ids that end a sequence (EOS, EOT, ...); may be empty."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``, without BOS or any other special token."""
        ...

    def token_text(self, token_id: int) -> str:
        """The text one token stands for (special tokens as their text)."""
        ...


@dataclass(frozen=True, eq=False)
class ListVocab:
    """A vocabulary given as the text of each token id; ``encode`` is greedy longest match.

    Args:
        texts: ``texts[i]`` is token ``i``'s text; texts need not be unique (``encode`` uses
            the first id of the longest match).
        eos_token_ids: the ids that end a sequence.

    >>> v = ListVocab(("a", "b", "ab", ":"))
    >>> v.encode("aab:"), v.token_text(2), v.size
    ([0, 2, 3], 'ab', 4)
    """

    texts: tuple[str, ...]
    eos_token_ids: tuple[int, ...] = ()
    _ids: dict[str, int] = field(init=False, repr=False)  # text -> first id with that text
    _longest: int = field(init=False, repr=False)  # longest text, bounds encode's search

    def __post_init__(self) -> None:
        ids: dict[str, int] = {}
        for i, text in enumerate(self.texts):
            ids.setdefault(text, i)
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_longest", max((len(t) for t in self.texts), default=0))

    @property
    def size(self) -> int:
        return len(self.texts)

    def token_text(self, token_id: int) -> str:
        return self.texts[token_id]

    def encode(self, text: str) -> list[int]:
        ids, longest = self._ids, self._longest
        out: list[int] = []
        at = 0
        while at < len(text):
            for n in range(min(longest, len(text) - at), 0, -1):
                token = ids.get(text[at:at + n])
                if token is not None:
                    out.append(token)
                    at += n
                    break
            else:
                raise ValueError(f"{text[at]!r} at position {at} of {text!r} is not in the "
                                 f"vocabulary: add a token for it")
        return out


def byte_vocab(extra: Sequence[str] = (), eos_token_ids: Sequence[int] = ()) -> ListVocab:
    """A byte-level test vocabulary: ids 0-255 are the single characters ``chr(0)`` to
    ``chr(255)`` (so any Latin-1 text encodes), then ``extra`` multi-character tokens.

    >>> v = byte_vocab(["ab"])
    >>> v.size, v.encode("abc"), v.token_text(256)
    (257, [256, 99], 'ab')
    """
    return ListVocab(tuple(chr(i) for i in range(256)) + tuple(extra),
                     tuple(int(i) for i in eos_token_ids))
