"""A distribution over named tokens at one temperature: numbers, a dict, a DataFrame, and a
colour-graded table when shown in a notebook."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tempscope.distribution import as_array, check_temperature, entropy, softmax

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TokenDistribution:
    """``softmax(logits / temperature)`` over a small named vocabulary.

    >>> d = TokenDistribution.from_logits([2, 4, 3], words=["a", "b", "c"], temperature=1)
    >>> d.top_word, round(d.top_probability, 5)
    ('b', 0.66524)
    """

    words: tuple[str, ...]
    logits: np.ndarray  # (V,) float64
    temperature: float
    probabilities: np.ndarray  # (V,) float64, sums to 1

    @classmethod
    def from_logits(
        cls,
        logits: Sequence[float] | np.ndarray,
        *,
        words: Sequence[str] | None = None,
        temperature: float = 1.0,
    ) -> TokenDistribution:
        """Build the distribution; ``words`` default to ``"0", "1", ...``."""
        t = check_temperature(temperature)
        arr = np.asarray(as_array(logits), dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"logits must be one list of numbers, got shape {arr.shape}")
        names = tuple(str(i) for i in range(arr.shape[0])) if words is None else tuple(words)
        if len(names) != arr.shape[0]:
            raise ValueError(
                f"got {len(names)} words but {arr.shape[0]} logits: give one logit per word"
            )
        return cls(names, arr, t, np.asarray(softmax(arr, t)))

    @property
    def argmax(self) -> int:
        """Index of the most likely word (the first one on ties)."""
        return int(np.argmax(self.probabilities))

    @property
    def top_word(self) -> str:
        return self.words[self.argmax]

    @property
    def top_probability(self) -> float:
        return float(self.probabilities[self.argmax])

    @property
    def entropy(self) -> float:
        """Entropy in nats."""
        return float(entropy(self.probabilities))

    @property
    def effective_vocab(self) -> float:
        """``exp(entropy)``: how many equally likely words this is worth."""
        return float(np.exp(self.entropy))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: temperature, words, logits, probabilities, argmax, entropy."""
        return {
            "temperature": self.temperature,
            "words": list(self.words),
            "logits": self.logits.tolist(),
            "probabilities": self.probabilities.tolist(),
            "argmax": self.argmax,
            "top_word": self.top_word,
            "top_probability": self.top_probability,
            "entropy": self.entropy,
            "effective_vocab": self.effective_vocab,
        }

    def to_frame(self) -> pd.DataFrame:
        """A pandas DataFrame with columns word, logit, probability (index = token index)."""
        import pandas as pd

        return pd.DataFrame(
            {"word": self.words, "logit": self.logits, "probability": self.probabilities}
        )

    def _repr_html_(self) -> str:
        # Notebook view: the seed's seaborn-style table, a colour gradient on the numbers.
        styler = (
            self.to_frame()
            .style.background_gradient(subset=["logit"], cmap="Blues")
            .background_gradient(subset=["probability"], cmap="Greens", vmin=0.0, vmax=1.0)
            .format({"logit": "{:.4f}", "probability": "{:.5f}"})
            .set_caption(
                f"T = {self.temperature:g} — most likely: {self.top_word} "
                f"(Prob: {self.top_probability:.5f}), entropy {self.entropy:.3f} nats"
            )
        )
        return str(styler.to_html())


def temperature_table(
    logits: Sequence[float] | np.ndarray,
    temperatures: Sequence[float],
    *,
    words: Sequence[str] | None = None,
) -> list[TokenDistribution]:
    """One :class:`TokenDistribution` per temperature, same words and logits.

    >>> [round(d.top_probability, 5) for d in temperature_table([2, 4, 3], [1, 100])]
    [0.66524, 0.33667]
    """
    if len(temperatures) == 0:
        raise ValueError("give at least one temperature")
    return [
        TokenDistribution.from_logits(logits, words=words, temperature=t) for t in temperatures
    ]
