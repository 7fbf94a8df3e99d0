"""The one door to a model: the :class:`Backend` protocol every engine implements.

Everything above ``engine/`` (generation, next-token views, metrics, studies, the server)
reaches a model only through these methods; nothing there touches a transformers model, a torch
KV cache or a llama.cpp context. An engine is one module implementing :class:`Backend` and
:class:`Session`, plus one line in :func:`tempscope.engine.loader.load_model`.

Logits cross the door as float32 torch tensors on :attr:`Backend.device` (the sampler chain
runs there): ``(V,)`` for one prompt, ``(rows, V)`` for a decoding session.

A decoding session, the shape of every generation loop::

    session = backend.open_session([ids_a, ids_b])   # prefill: logits (2, V)
    logits = session.logits
    logits = session.step(tokens)                     # one token per live row -> (rows, V)
    session.keep([1])                                 # row 0 finished: it leaves the batch
    logits = session.step(tokens[1:])                 # (1, V)
    job = session.prefill(ids_c, copies=2)            # rows join a running session:
    while not job.advance():                          # one prefill chunk at a time, with
        logits = session.step(tokens)                 # decode steps between the chunks
    new = session.join(job)                           # (2, V); live rows are now 1 + 2
    session.close()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path

    import torch

EngineName = Literal["torch", "llama.cpp"]
R = TypeVar("R")  # what a position_logits reducer returns per block
ENGINE_CHOICES: tuple[str, ...] = ("auto", "torch", "llama.cpp")


def check_text(text: str, what: str = "the text") -> str:
    """``text`` unchanged when it is valid Unicode; else ``ValueError`` naming the first lone
    surrogate (valid JSON can carry one, ``"a\\ud800b"``, but no tokenizer can encode it).

    >>> check_text("a cat")
    'a cat'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise ValueError(
            f"{what} contains a lone surrogate (U+{ord(bad):04X}) at character {exc.start}, "
            "which is not valid Unicode: send UTF-8 text (a surrogate pair must come whole)"
        ) from None
    return text


def check_positions(ids: Sequence[int], start: int, chunk: int) -> None:
    """Raise ``ValueError`` unless ``ids[start:]`` is a non-empty run of tokens that each have
    a context (``1 <= start < len(ids)``) and ``chunk`` is a whole number >= 1.

    >>> check_positions([5, 6, 7], 1, 64)
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a whole number >= 1 (rows of logits per block), "
                         f"got {chunk!r}")
    if not 1 <= start < len(ids):
        raise ValueError(f"start must be from 1 (the first token has no context to predict it) "
                         f"to len(ids) - 1 = {len(ids) - 1}, got {start}: score a longer text")


class Cancelled(Exception):
    """A session's prefill stopped because its caller no longer wants the rows."""


@dataclass(frozen=True)
class ModelFacts:
    """What a user wants to know about a loaded model (the seed lists these for GPT-2)."""

    name: str
    source: str  # "embedded" | "hub" | "local" | "gguf"
    architecture: str  # e.g. "LlamaForCausalLM" (torch) or "llama" (llama.cpp)
    parameters: int  # distinct parameters (tied embeddings counted once)
    vocab_size: int  # size of the logits' last axis
    embedding_dim: int  # width of the residual stream
    heads: int  # attention heads per layer
    layers: int  # transformer blocks
    context_length: int  # longest sequence the position scheme was trained for
    special_tokens: dict[str, str] = field(default_factory=dict)  # e.g. {"eos_token": "<|im_end|>"}
    special_token_ids: dict[str, int] = field(default_factory=dict)  # e.g. {"eos_token": 2}
    device: str = "cpu"
    dtype: str = "float32"  # of the weights as they run (a GGUF type name on llama.cpp)
    has_chat_template: bool = False
    engine: str = "torch"  # which engine runs the model: "torch" or "llama.cpp"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of every field."""
        return asdict(self)


class Prefill(Protocol):
    """A prompt on its way into a running session (:meth:`Session.prefill`): computed one
    chunk per :meth:`advance`, so that decode steps of the rows already running can go on
    between its chunks. Its rows join the session with :meth:`Session.join`."""

    prompt_ids: list[int]
    copies: int  # rows that start from this prompt

    @property
    def done(self) -> bool:
        """Every prompt token is in the cache and the logits after the last are ready."""

    @property
    def pending(self) -> int:
        """Prompt tokens still to compute."""

    def advance(self) -> bool:
        """Compute the next chunk of the prompt; returns :attr:`done`."""

    def cancel(self) -> None:
        """Give the prompt's memory back without joining (idempotent)."""


def prefill_rows(session: Session, prompts: Sequence[Sequence[int]],
                 should_stop: Callable[[], bool] | None) -> None:
    """Make ``prompts`` the rows of an empty session that rows can join, in the order given:
    each distinct prompt prefilled once (the rows sharing it get copies), ``should_stop``
    asked before each prompt after the first and between chunks (it raises
    :class:`Cancelled`). The engines' ``open_session`` with prompts."""
    unique: dict[tuple[int, ...], list[int]] = {}
    for row, p in enumerate(prompts):
        unique.setdefault(tuple(int(t) for t in p), []).append(row)
    for n, (prompt, where) in enumerate(unique.items()):
        if n and should_stop is not None and should_stop():
            raise Cancelled
        job = session.prefill(prompt, copies=len(where))
        while not job.advance():
            if should_stop is not None and should_stop():
                raise Cancelled
        session.join(job)
    order = [row for where in unique.values() for row in where]  # joined grouped by prompt
    if order != sorted(order):
        session.keep(sorted(range(len(order)), key=order.__getitem__))


class ChunkedPrefill:
    """What every engine's :class:`Prefill` shares: the prompt, its rows, how far it got and
    the logits after its last token once done. ``advance`` is the engine's own."""

    logits: Any = None  # the logits after the last prompt token, once done

    def __init__(self, ids: list[int], copies: int, start: int = 0) -> None:
        self.prompt_ids = ids
        self.copies = copies
        self._pos = start  # the next prompt position to compute

    @property
    def done(self) -> bool:
        return self.logits is not None

    @property
    def pending(self) -> int:
        return len(self.prompt_ids) - self._pos


class Session(Protocol):
    """A batch of rows decoding together, one backend call per step for all live rows."""

    @property
    def can_join(self) -> bool:
        """True when rows may join while others run (:meth:`prefill` / :meth:`join`); False
        for a layout whose rows must all start together (torch's batched layout)."""

    @property
    def capacity(self) -> tuple[int | None, int]:
        """``(rows, tokens)``: most rows live or prefilling at once (None = no limit) and
        most tokens (prompt + generated) one row may hold."""

    @property
    def reserved(self) -> int:
        """Rows live or prefilling now (what counts against ``capacity[0]``)."""

    def prefill(self, prompt_ids: Sequence[int], *, copies: int = 1) -> Prefill:
        """Start a prompt that ``copies`` new rows will share; nothing is computed until
        :meth:`Prefill.advance`. Raises ``EngineError`` when the rows or the prompt do not
        fit :attr:`capacity`. A prompt whose start this session still holds (a row that
        ran it, or a longer text that began with it) reuses those cells where the engine
        can do so without changing a single logit."""

    def join(self, prefill: Prefill) -> torch.Tensor:
        """Add a finished prefill's rows after the live ones; returns their ``(copies, V)``
        logits (also appended to :attr:`logits`)."""

    @property
    def logits(self) -> torch.Tensor:
        """``(rows, V)`` float32: the next-token logits of every live row, latest step."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per live row (``(rows,)`` int64) and return the new
        ``(rows, V)`` logits."""

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the live rows at these positions (ascending); the others' memory is
        freed. The next :meth:`step` takes one token per kept row."""

    def close(self) -> None:
        """Free every row (idempotent)."""


@runtime_checkable
class Backend(Protocol):
    """A loaded causal LM behind one interface; see the module docstring."""

    name: str  # what the user asked for (or the embedded default's name)
    source: str  # "embedded" | "hub" | "local" | "gguf"
    engine: EngineName
    cache_path: Path | None  # converted weights a GGUF was read from (torch only)
    max_rows: int | None  # most rows one session decodes; None = no limit

    @property
    def reproducible(self) -> bool:
        """True when a session computes every row exactly as it would alone, so a seeded row's
        tokens never depend on the rows beside it (batch invariance). The torch engine can
        trade it for speed (``LoadedModel.reproducible = False``: rows share batched matrix
        products); llama.cpp always keeps it."""

    @property
    def joinable(self) -> bool:
        """True when rows may join a session while others decode (:meth:`Session.prefill`):
        llama.cpp and torch's reproducible layout; not torch's batched layout."""

    @property
    def device(self) -> torch.device:
        """Where logits come out, and where the sampler chain runs."""

    @property
    def facts(self) -> ModelFacts: ...

    @property
    def vocab_size(self) -> int:
        """Size of the logits' last axis."""

    @property
    def eos_token_ids(self) -> list[int]:
        """Every token id that ends generation."""

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def has_chat_template(self) -> bool: ...

    def encode(self, text: str, *, chat: bool = False) -> list[int]:
        """Token ids of ``text`` (a BOS where the model expects one); ``chat=True`` wraps it
        as one user message in the chat template, with the assistant prompt after it."""

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a conversation (``[{"role", "content"}, ...]``) through the chat
        template, with the generation prompt. Raises ``ValueError`` when the template
        rejects it or the model has none."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` exactly as tokenized: special tokens kept, no clean-up."""

    def token_text(self, token_id: int) -> str:
        """The text of one token alone, e.g. ``" mat"``."""

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (a token may hold part of a UTF-8 character)."""

    def last_logits(self, prompt_ids: Sequence[int]) -> torch.Tensor:
        """``(V,)`` float32 logits of the token after ``prompt_ids``: one forward pass."""

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]],
                          starts: Sequence[int]) -> list[list[float]]:
        """For each sequence, ``log p(ids[i] | ids[:i])`` at T = 1 for ``i`` in
        ``starts[k] .. len(ids) - 1`` (``starts[k] >= 1``)."""

    def open_session(self, prompts: Sequence[Sequence[int]], *, budget: int = 0,
                     should_stop: Callable[[], bool] | None = None,
                     rows: int | None = None, tokens: int | None = None) -> Session:
        """Prefill ``prompts`` (each at least one token; none is fine) as the rows of a
        decoding session in which each row will add at most ``budget`` tokens (an engine may
        size its cache by it). ``should_stop`` is asked between prefill chunks; when it says
        yes the prefill stops and :class:`Cancelled` is raised. ``rows`` and ``tokens`` ask
        for room for rows that join later (:attr:`Session.capacity`): at least ``rows`` rows
        of ``tokens`` tokens each. At most one session is open per model."""

    def position_logits(self, ids: Sequence[int], start: int,
                        reduce: Callable[[torch.Tensor, torch.Tensor], R], *,
                        chunk: int = 256) -> list[R]:
        """Run ``ids`` through the model once and hand the full logits of every scored
        position to ``reduce``, one block at a time, so that memory holds one block of
        ``(chunk, V)`` logits however long the text is.

        Args:
            ids: ``(L,)`` token ids of the whole text (a BOS included where the model wants).
            start: the first token to predict, ``1 <= start < L``; ``ids[:start]`` is context.
            reduce: called in order as ``reduce(logits, targets)``: ``targets`` ``(n,)``
                int64, the next ``n <= chunk`` tokens of ``ids[start:]``; ``logits``
                ``(n, V)`` float32, row ``i`` the logits that predict ``targets[i]`` (after
                every token before it). On llama.cpp it runs on the thread that owns the
                context.
            chunk: most rows per block.

        Returns:
            What ``reduce`` returned, one entry per block.

        Example: ``model.position_logits([1, 5, 6, 7], 1, lambda z, y: tuple(z.shape))``
        gives ``[(3, V)]`` (tokens 5, 6 and 7 predicted, one block).
        """
