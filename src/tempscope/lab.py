"""The temperature lab: a text as a tree of tokens you can open, redraw and branch from.

Everything the playground's lab does, as plain functions on a :class:`~tempscope.engine.
backend.Backend`, so a notebook can do the same:

- :func:`side_by_side_rows`: one generation row per temperature, same prompt, seed and
  samplers (run them with :func:`tempscope.generate_rows` or the server's batcher);
  :func:`token_info` and :func:`column_summary` turn its step events and results into what
  the page draws (probabilities raw and processed, entropy, GLTR rank bucket).
- :func:`step_distribution`: the distribution at one step of a text (prompt + tokens), raw
  and after the sampler chain, at several temperatures, from one ``(V,)`` logits vector: a
  cached vector redraws at any temperature without another model call.
- :class:`TreeExpansion` / :func:`expand_tree`: the likeliest continuations to depth ``d``
  with a probability cut-off, one batched engine call per level.

>>> gltr_bucket(3), gltr_bucket(57), gltr_bucket(None)
('top10', 'top100', 'rest')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from tempscope.engine.backend import Backend
    from tempscope.engine.loop import RowResult, RowSpec, StepEvent
    from tempscope.sampling import SamplingParams

Bucket = Literal["top10", "top100", "top1000", "rest"]

#: GLTR's rank buckets (Gehrmann et al., 2019): the chosen token was among the model's 10,
#: 100 or 1000 likeliest (raw distribution, T = 1), or further down.
GLTR_EDGES: tuple[tuple[int, Bucket], ...] = ((10, "top10"), (100, "top100"), (1000, "top1000"))


def gltr_bucket(rank: int | None) -> Bucket:
    """The GLTR bucket of a 1-based raw rank; ``None`` (beyond GLTR's last edge) = rest."""
    for edge, name in GLTR_EDGES:
        if rank is not None and rank <= edge:
            return name
    return "rest"


# ---------------------------------------------------------------------------- generation


def side_by_side_rows(prompt_ids: Sequence[int], params: Sequence[SamplingParams], *,
                      seed: int, max_new_tokens: int) -> list[RowSpec]:
    """One row per parameter set (typically the same samplers at several temperatures), all
    from ``prompt_ids`` with the same ``seed``: rows then share their random numbers, so the
    texts differ only because the temperatures do.

    Args:
        prompt_ids: ``(T,)`` token ids (a prompt, or a prompt plus a branch's tokens).
        params: one :class:`SamplingParams` per column.
        seed: every row's seed.
        max_new_tokens: each row's budget.
    """
    from tempscope.engine.loop import RowSpec

    if not prompt_ids:
        raise ValueError("the prompt has no tokens: give at least one")
    return [RowSpec(prompt_ids=list(prompt_ids), params=p, seed=seed,
                    max_new_tokens=max_new_tokens) for p in params]


def raw_rank(event: StepEvent) -> int | None:
    """1-based rank of the chosen token in the raw (T = 1) distribution: the engine counts it
    over the whole vocabulary at every step (:attr:`StepEvent.raw_rank`). ``None`` for an
    event that does not carry it (a remote server's)."""
    return event.raw_rank or None


@dataclass(frozen=True)
class Candidate:
    """A token the model could have chosen at a step, with its raw and processed odds."""

    token_id: int
    text: str  # decoded alone, e.g. " mat"
    raw_prob: float  # softmax(logits) at T = 1, no samplers
    prob: float  # after the row's sampler chain (0 when the chain removed it)


@dataclass(frozen=True)
class TokenInfo:
    """One generated token as the lab shows it."""

    token_id: int
    text: str  # decoded alone
    display: str  # whitespace made visible; a partial UTF-8 character as its bytes
    raw_prob: float  # T = 1, no samplers
    prob: float  # under the distribution it was drawn from
    raw_entropy: float  # nats, of the raw distribution (T = 1)
    entropy: float  # nats, of the distribution it was drawn from
    rank: int | None  # 1-based raw rank over the whole vocabulary (None: unknown)
    bucket: Bucket | None  # GLTR bucket of that rank (None: unknown)
    top: list[Candidate]  # the likeliest alternatives after processing, then by raw odds
    finished: str | None  # the row's finish reason on its last step
    named: list[Candidate]  # the tokens of logprob_token_ids, whatever their rank


def token_info(model: Backend, event: StepEvent, *, alternatives: int = 10) -> TokenInfo:
    """What the lab shows for one step event; ``alternatives`` caps the list it keeps."""
    from tempscope.engine.nexttoken import token_display

    rank = raw_rank(event)
    return TokenInfo(
        token_id=event.token_id, text=event.text,
        display=token_display(model, event.token_id, event.text),
        raw_prob=event.raw_prob, prob=event.prob, raw_entropy=event.raw_entropy,
        entropy=event.entropy, rank=rank,
        bucket=None if rank is None else gltr_bucket(rank),
        top=[Candidate(a.token_id, a.text, a.raw_prob, a.prob)
             for a in event.top[:alternatives]],
        finished=event.finished,
        named=[Candidate(a.token_id, a.text, a.raw_prob, a.prob) for a in event.named])


@dataclass(frozen=True)
class ColumnSummary:
    """One finished row: its text and how it went."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "eos", "stop", "length" or "cancelled"
    mean_logprob: float  # mean raw (T = 1) log-prob of the chosen tokens; NaN when none
    mean_entropy: float  # mean raw (T = 1) entropy of the steps, nats
    mean_sampled_entropy: float  # mean entropy of the distributions drawn from, nats


def column_summary(result: RowResult) -> ColumnSummary:
    """A :class:`ColumnSummary` of one :class:`~tempscope.engine.loop.RowResult`."""
    sampled = [s.entropy for s in result.steps]
    return ColumnSummary(
        text=result.text, token_ids=list(result.token_ids),
        finish_reason=result.finish_reason, mean_logprob=result.mean_logprob,
        mean_entropy=result.mean_entropy,
        mean_sampled_entropy=sum(sampled) / len(sampled) if sampled else math.nan)


def piece_ids(model: Backend, text: str) -> list[int]:
    """Token ids of ``text`` to append after other tokens: no BOS in front (the tokenizer's
    view the sampler chain uses too)."""
    from tempscope.engine.loop import BackendVocab

    return BackendVocab(model).encode(text)


# ---------------------------------------------------------------------------- one step


@dataclass(frozen=True)
class Summary:
    """What one distribution says."""

    entropy: float  # nats
    effective_vocab: float  # exp(entropy)
    top_probability: float
    kept: int  # tokens with probability > 0


@dataclass(frozen=True)
class StepTemperature:
    """The step's distribution at one temperature."""

    temperature: float
    raw: Summary  # softmax(logits / T), no samplers
    processed: Summary  # after the sampler chain
    raw_probs: list[float]  # aligned with StepDistribution.tokens
    probs: list[float]  # aligned with StepDistribution.tokens
    top: list[tuple[int, float, float]]  # (token id, raw prob, prob): the processed top-N


@dataclass(frozen=True)
class StepDistribution:
    """The next-token distribution after ``ids`` at several temperatures."""

    ids: list[int]  # the text so far: prompt + tokens
    logits: torch.Tensor  # (V,) float32, raw last-position logits
    tokens: list[int]  # top-N by logit: the order at every T > 0
    texts: dict[int, str]  # token id -> text, for every id listed anywhere
    temperatures: list[StepTemperature]
    samplers_on: bool  # a sampler besides temperature changes the distribution


def step_distribution(model: Backend, ids: Sequence[int], params: Sequence[SamplingParams],
                      *, top: int = 20, logits: torch.Tensor | None = None
                      ) -> StepDistribution:
    """The distribution after ``ids``, raw and processed, at each parameter set's temperature.

    Args:
        model: a loaded model (only asked for logits when ``logits`` is None, and for texts).
        ids: ``(T,)`` the prompt's token ids plus the tokens generated so far.
        params: one :class:`SamplingParams` per temperature to show (its ``temperature``;
            None = 1). Penalties see ``ids`` as the history. A stateful sampler (mirostat)
            starts fresh here: the distribution a row actually drew from also depended on
            its state, which the step event's ``prob`` reports.
        top: length of the tables, ``>= 1`` (clamped to the vocabulary).
        logits: ``(V,)`` logits after ``ids`` when already known (a cache): no model call.

    Example (needs a model)::

        d = step_distribution(model, model.encode("The cat slept on the"),
                              [SamplingParams(temperature=t, min_p=0.1) for t in (0.5, 1.5)])
        d.temperatures[1].processed.kept
    """
    import torch

    from tempscope.distribution import effective_vocab, entropy, softmax
    from tempscope.engine.loop import BackendVocab
    from tempscope.engine.nexttoken import last_logits
    from tempscope.sampling import probabilities

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if not params:
        raise ValueError("give at least one SamplingParams (one per temperature)")
    x = (last_logits(model, ids) if logits is None else logits).float().reshape(-1)  # (V,)
    n = min(top, x.shape[-1])
    order = torch.topk(x, n).indices.tolist()  # top-N by logit, likeliest first
    processed = probabilities(x.expand(len(params), -1), list(params),
                              history=[list(ids)] * len(params),
                              vocab=BackendVocab(model))  # (B, V); text samplers (DRY) read it

    def summary(p: torch.Tensor) -> Summary:
        return Summary(entropy=float(entropy(p)), effective_vocab=float(effective_vocab(p)),
                       top_probability=float(p.max()), kept=int((p > 0).sum()))

    rows = []
    listed = set(order)
    for p, proc in zip(params, processed, strict=True):
        t = 1.0 if p.temperature is None else p.temperature
        raw = softmax(x, t)  # (V,)
        best = torch.topk(proc, n).indices.tolist()
        listed.update(best)
        rows.append(StepTemperature(
            temperature=t, raw=summary(raw), processed=summary(proc),
            raw_probs=raw[order].tolist(), probs=proc[order].tolist(),
            top=[(i, float(raw[i]), float(proc[i])) for i in best]))
    return StepDistribution(
        ids=list(ids), logits=x, tokens=order,
        texts={i: model.token_text(i) for i in sorted(listed)}, temperatures=rows,
        samplers_on=any(set(p.chain) - {"temperature"} for p in params))


# ---------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class TreeNode:
    """A continuation: one token after its parent's path."""

    id: int  # position in TreeExpansion.nodes
    parent: int | None  # None: a first token after the prompt
    depth: int  # 1 for a first token
    token_id: int
    text: str  # the token decoded alone
    prob: float  # p(token | path so far), after the sampler chain
    raw_prob: float  # the same at T = 1 with no samplers
    path_prob: float  # product of prob from the prompt down to this node
    path: tuple[int, ...]  # token ids from the prompt to this node, inclusive
    path_text: str  # those tokens decoded together
    end: bool  # an end-of-sequence token: never expanded


@dataclass
class TreeExpansion:
    """Breadth-first expansion of the likeliest continuations of a prompt.

    Each level is one batch of rows (one per node to expand) that generates a single token;
    the children of a node are the first ``top`` alternatives its step lists (the tokens the
    chain kept, likeliest first) whose processed probability is at least ``min_prob``.
    Drive it with any row runner::

        tree = TreeExpansion(ids, params, depth=3, top=3, min_prob=0.05, eos_ids={2})
        while (rows := tree.rows()):
            tree.add(generate_rows(model, rows, top_alternatives=tree.top), decode=model.decode)

    Args:
        prompt_ids: ``(T,)`` the prompt's token ids.
        params: the sampler chain (its temperature included) that gives the probabilities.
        depth: levels below the prompt, ``>= 1``.
        top: children per node at most, ``>= 1``.
        min_prob: cut-off on a child's processed probability, in ``[0, 1]``.
        max_nodes: stop adding nodes at this many.
        eos_ids: tokens that end a text; such a node is a leaf.
    """

    prompt_ids: list[int]
    params: SamplingParams
    depth: int = 3
    top: int = 3
    min_prob: float = 0.05
    max_nodes: int = 100
    eos_ids: frozenset[int] = frozenset()
    nodes: list[TreeNode] = field(default_factory=list, init=False)
    truncated: bool = field(default=False, init=False)  # max_nodes cut the tree short
    # the nodes the next level expands (None = the prompt itself) and the levels done
    _frontier: list[TreeNode | None] = field(default_factory=lambda: [None], init=False)
    _level: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("the prompt has no tokens: give at least one")
        if self.depth < 1 or self.top < 1 or self.max_nodes < 1:
            raise ValueError(f"depth, top and max_nodes must be >= 1, got depth={self.depth}, "
                             f"top={self.top}, max_nodes={self.max_nodes}")
        if not 0 <= self.min_prob <= 1:
            raise ValueError(f"min_prob must be in [0, 1], got {self.min_prob}")
        self.eos_ids = frozenset(self.eos_ids)

    def rows(self) -> list[RowSpec]:
        """The rows of the next level (one token each); empty when the tree is done."""
        from tempscope.engine.loop import RowSpec

        if self._level >= self.depth or not self._frontier:
            return []
        if len(self.nodes) >= self.max_nodes:
            self.truncated = True
            return []
        return [RowSpec(prompt_ids=self.prompt_ids + list(n.path if n else ()),
                        params=self.params, seed=0, max_new_tokens=1)
                for n in self._frontier]

    def add(self, results: Sequence[RowResult], *, decode: Callable[[list[int]], str]
            ) -> None:
        """Take the results of :meth:`rows` (same order); ``decode`` gives path texts."""
        if len(results) != len(self._frontier):
            raise ValueError(f"got {len(results)} results for {len(self._frontier)} rows")
        self._level += 1
        frontier: list[TreeNode | None] = []
        for parent, result in zip(self._frontier, results, strict=True):
            if not result.steps:  # no room left in the context: a leaf
                continue
            for alt in result.steps[0].top[:self.top]:
                if alt.prob <= 0 or alt.prob < self.min_prob:
                    continue
                if len(self.nodes) >= self.max_nodes:
                    self.truncated = True
                    break
                path = (*(parent.path if parent else ()), alt.token_id)
                node = TreeNode(
                    id=len(self.nodes), parent=parent.id if parent else None,
                    depth=self._level, token_id=alt.token_id, text=alt.text, prob=alt.prob,
                    raw_prob=alt.raw_prob,
                    path_prob=(parent.path_prob if parent else 1.0) * alt.prob, path=path,
                    path_text=decode(list(path)), end=alt.token_id in self.eos_ids)
                self.nodes.append(node)
                if not node.end:
                    frontier.append(node)
        self._frontier = frontier


def expand_tree(model: Backend, prompt_ids: Sequence[int], params: SamplingParams, *,
                depth: int = 3, top: int = 3, min_prob: float = 0.05,
                max_nodes: int = 100) -> TreeExpansion:
    """The likeliest continuations of ``prompt_ids`` to ``depth`` tokens (see
    :class:`TreeExpansion`), one batched engine call per level.

    Example (needs a model)::

        tree = expand_tree(model, model.encode("The cat slept on the"),
                           SamplingParams(temperature=0.7), depth=2)
        [(n.path_text, round(n.path_prob, 3)) for n in tree.nodes]
    """
    from tempscope.engine.loop import generate_rows

    tree = TreeExpansion(list(prompt_ids), params, depth=depth, top=top, min_prob=min_prob,
                         max_nodes=max_nodes, eos_ids=frozenset(model.eos_token_ids))
    while rows := tree.rows():
        tree.add(generate_rows(model, rows, top_alternatives=top), decode=model.decode)
    return tree
