"""The torch engine: any transformers causal LM (hub name, folder, GGUF through a float32
cache) on CUDA, MPS or the CPU, behind :class:`~tempscope.engine.backend.Backend`.

A decoding session prefills each distinct prompt once (a sweep of 48 samples of one prompt
costs one prompt pass) and computes only the last position's logits. Two layouts:

- reproducible (the default, :attr:`LoadedModel.reproducible`): every row runs as if it were
  alone: its own ``DynamicCache``, its own batch-of-one forward pass per step. A row's logits
  are bit-identical alone and in any batch. Rows cost one forward pass each per step.
- batched (``reproducible = False``): the rows left-padded into one ``DynamicCache`` with an
  attention mask and explicit position ids, one forward pass per step for all. Faster for many
  rows, but BLAS picks its kernels by the batch's shape (a matrix-vector product for one row,
  blocked products whose blocking changes with the number of rows), and the padding changes
  the attention's length: a row's logits then move in their last bits with its company, and a
  seeded row's tokens can change (docs/engines.md has the measurements).
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tempscope.engine.backend import (
    Cancelled,
    ChunkedPrefill,
    EngineName,
    ModelFacts,
    Prefill,
    R,
    check_positions,
    check_text,
    prefill_rows,
)
from tempscope.errors import EngineError

PREFILL_CHUNK = 512  # prompt tokens per forward pass of a prefill (rows run between chunks)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class LoadedModel:
    """A transformers causal LM and its tokenizer, in eval mode on one device.

    Attributes:
        name: what the user asked for (or the embedded default's name).
        source: ``"embedded"``, ``"hub"``, ``"local"`` or ``"gguf"``.
        model: the transformers ``PreTrainedModel`` (engine internals: only ``engine/`` and
            tests reach it).
        tokenizer: the matching tokenizer.
        device, dtype: where and in which precision the weights live.
        cache_path: the converted-weights folder a GGUF model was read from, else ``None``.
        converted: ``True`` when this load dequantized a GGUF file (no usable cache yet).
    """

    engine: EngineName = "torch"
    max_rows: int | None = None
    reproducible: bool = True  # a row's logits never depend on its company (module docstring)

    def __init__(
        self,
        name: str,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        source: str,
        cache_path: Path | None = None,
        converted: bool = False,
    ) -> None:
        self.name = name
        self.source = source
        self.model = model
        self.tokenizer = tokenizer
        self.cache_path = cache_path
        self.converted = converted
        first = next(model.parameters())
        self._device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        # Checked once here, not per call: older architectures lack `logits_to_keep`.
        self.supports_logits_to_keep = (
            "logits_to_keep" in inspect.signature(model.forward).parameters
        )
        self._facts: ModelFacts | None = None
        # token id -> its text: generation shows each step's token and alternatives, and
        # decoding through the tokenizer every time was about half of a small model's step.
        self._token_texts: dict[int, str] = {}

    def __repr__(self) -> str:
        return (f"LoadedModel(name={self.name!r}, source={self.source!r}, engine='torch', "
                f"device={self.device}, dtype={_dtype_name(self.dtype)})")

    @property
    def joinable(self) -> bool:
        """Rows join running sessions in the reproducible layout (a cache per row); the
        batched layout's rows share one left-padded cache and start together."""
        return self.reproducible

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def vocab_size(self) -> int:
        """Size of the logits' last axis (can exceed ``len(tokenizer)`` by padding rows)."""
        model: Any = self.model  # transformers leaves this method untyped
        head = model.get_output_embeddings()
        if head is not None and hasattr(head, "weight"):
            return int(head.weight.shape[0])
        return int(self.model.config.get_text_config().vocab_size)

    @property
    def eos_token_ids(self) -> list[int]:
        """Every token id that ends generation: the tokenizer's, the config's and the
        generation config's end-of-sequence ids, deduplicated, in that order."""
        found: list[int] = []
        sources: list[Any] = [
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
            getattr(self.model.config.get_text_config(), "eos_token_id", None),
        ]
        for value in sources:
            for i in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(i, int) and i not in found:
                    found.append(i)
        return found

    @property
    def bos_token_id(self) -> int | None:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return None if bos is None else int(bos)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def facts(self) -> ModelFacts:
        """Parameter count, vocabulary, sizes, special tokens, device and dtype."""
        if self._facts is None:
            cfg = self.model.config.get_text_config()
            archs = getattr(self.model.config, "architectures", None) or [
                type(self.model).__name__
            ]
            named = special_tokens(self.tokenizer)
            self._facts = ModelFacts(
                name=self.name,
                source=self.source,
                architecture=str(archs[0]),
                parameters=sum(p.numel() for p in self.model.parameters()),
                vocab_size=self.vocab_size,
                embedding_dim=int(_first_attr(cfg, "hidden_size", "n_embd", "d_model")),
                heads=int(_first_attr(cfg, "num_attention_heads", "n_head")),
                layers=int(_first_attr(cfg, "num_hidden_layers", "n_layer")),
                context_length=int(
                    _first_attr(cfg, "max_position_embeddings", "n_positions", "n_ctx")
                ),
                special_tokens=named,
                special_token_ids={
                    k: int(self.tokenizer.convert_tokens_to_ids(v))  # type: ignore[arg-type]
                    for k, v in named.items()},
                device=str(self.device),
                dtype=_dtype_name(self.dtype),
                has_chat_template=self.has_chat_template,
                engine=self.engine,
            )
        return self._facts

    # ------------------------------------------------------------------------- text <-> ids

    def encode(self, text: str, *, chat: bool = False) -> list[int]:
        """Token ids for ``text``, with the tokenizer's usual special tokens (a BOS where the
        model expects one). ``chat=True`` wraps ``text`` as one user message in the model's
        chat template and appends the assistant prompt."""
        check_text(text, "the prompt")
        if not chat:
            return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        if not self.has_chat_template:
            raise ValueError(
                f"model {self.name!r} has no chat template: drop --chat (chat=True) or use a "
                "chat model such as the embedded default"
            )
        return self.encode_chat([{"role": "user", "content": text}])

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if not self.has_chat_template:
            raise ValueError(f"model {self.name!r} has no chat template")
        for m in messages:
            check_text(str(m.get("content", "")), "a message")
        try:
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja raises its own errors for conversations it rejects
            raise ValueError(f"the model's chat template rejected these messages: {exc}"
                             ) from None
        return [int(i) for i in self.tokenizer.encode(str(text), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text for ``ids`` exactly as tokenized: special tokens kept, no space clean-up."""
        return str(self.tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        ))

    def token_text(self, token_id: int) -> str:
        """The text of one token, e.g. ``" mat"`` (leading space included); cached."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.decode([token_id])
        return text

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token: GPT-2 byte-level pieces map back to their bytes,
        SentencePiece byte tokens (``<0xE2>``) to theirs, anything else to its UTF-8 text."""
        text = self.token_text(token_id)
        if "\ufffd" not in text:
            return text.encode()
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return text.encode()
        table = _byte_level_decoder()
        if all(ch in table for ch in piece):  # a GPT-2 style byte-level token
            return bytes(table[ch] for ch in piece)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.encode()

    # ------------------------------------------------------------------------------- logits

    @torch.inference_mode()
    def last_logits(self, prompt_ids: Sequence[int]) -> torch.Tensor:
        """``(V,)`` float32 logits after ``prompt_ids``, on the CPU: one forward pass, the LM
        head on the last position only."""
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)  # (1, T)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                  "use_cache": False}
        if self.supports_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        logits: torch.Tensor = self.model(**kwargs).logits[0, -1]  # (V,)
        return logits.float().cpu()

    @torch.inference_mode()
    def sequence_logprobs(self, sequences: Sequence[Sequence[int]],
                          starts: Sequence[int]) -> list[list[float]]:
        """Log-probabilities of each sequence's tokens from ``starts[k]`` on, at T = 1: one
        right-padded forward pass for the whole batch."""
        pad = self.eos_token_ids[0] if self.eos_token_ids else 0
        width = max(len(s) for s in sequences)
        tokens = torch.full((len(sequences), width), pad, dtype=torch.long)  # (B, L)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, L) 1 = real
        for r, seq in enumerate(sequences):
            tokens[r, : len(seq)] = torch.tensor(list(seq))
            mask[r, : len(seq)] = 1
        logits = self.model(input_ids=tokens.to(self.device),
                            attention_mask=mask.to(self.device)).logits.float()  # (B, L, V)
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, L-1, V) predicts tokens 1..L-1
        token_logp = logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0].cpu()
        return [token_logp[r, start - 1: len(seq) - 1].tolist()
                for r, (seq, start) in enumerate(zip(sequences, starts, strict=True))]

    def open_session(self, prompts: Sequence[Sequence[int]], *, budget: int = 0,
                     should_stop: Callable[[], bool] | None = None,
                     rows: int | None = None, tokens: int | None = None,
                     ) -> TorchSession | RowwiseSession:
        # One prefill pass per distinct prompt: asked once, before the first. Chunking a
        # left-padded batch would attend from all-padding query rows; the server caps the
        # prompt tokens of one engine call instead.
        if should_stop is not None and should_stop():
            raise Cancelled
        if self.reproducible:
            return RowwiseSession(self, prompts, should_stop)
        return TorchSession(self, prompts)

    @torch.inference_mode()
    def position_logits(self, ids: Sequence[int], start: int,
                        reduce: Callable[[torch.Tensor, torch.Tensor], R], *,
                        chunk: int = 256) -> list[R]:
        """Every scored position's logits in blocks of ``chunk`` rows (see the protocol): the
        context before ``ids[start - 1]`` in one pass that keeps only its KV cache, then the
        rest in chunks over the growing ``DynamicCache``, all positions' logits each."""
        from transformers import DynamicCache

        check_positions(ids, start, chunk)
        tokens = torch.tensor([list(ids)], dtype=torch.long, device=self.device)  # (1, L)
        targets = tokens[0, start:].cpu()  # (L - start,)
        cache = DynamicCache()
        last = tokens.shape[1] - 1  # the final token predicts nothing

        def forward(a: int, b: int, keep: int) -> torch.Tensor:
            extra = {"logits_to_keep": keep} if self.supports_logits_to_keep else {}
            out = self.model(input_ids=tokens[:, a:b],
                             attention_mask=torch.ones_like(tokens[:, :b]),
                             position_ids=torch.arange(a, b, device=self.device)[None],
                             cache=cache, use_cache=True, **extra)
            logits: torch.Tensor = out.logits[0]  # (b - a or keep, V)
            return logits

        if start > 1:
            forward(0, start - 1, 1)  # context only: its KV cells, one row of logits
        out: list[R] = []
        for a in range(start - 1, last, chunk):
            b = min(a + chunk, last)
            logits = forward(a, b, 0)[-(b - a):].float().cpu()  # (b - a, V); 0 keeps all
            out.append(reduce(logits, targets[a - start + 1: b - start + 1]))
        return out


class RowwiseSession:
    """Rows decoding side by side, each exactly as it would alone: one ``DynamicCache`` and
    one batch-of-one forward pass per row and step (see the module docstring). Rows join at
    any step (:meth:`prefill` computes a prompt in chunks of :data:`PREFILL_CHUNK` tokens
    counted from its first, the same chunks whatever runs beside it) and leave at any step."""

    def __init__(self, model: LoadedModel, prompts: Sequence[Sequence[int]],
                 should_stop: Callable[[], bool] | None) -> None:
        self._model = model
        self._extra = {"logits_to_keep": 1} if model.supports_logits_to_keep else {}
        self._caches: list[Any] = []  # live row -> its DynamicCache
        self._length: list[int] = []  # live row -> tokens in its cache
        self._logits = torch.empty((0, model.vocab_size), device=model.device)
        self._pending: list[_TorchPrefill] = []
        prefill_rows(self, prompts, should_stop)

    @property
    def can_join(self) -> bool:
        return True

    @property
    def capacity(self) -> tuple[int | None, int]:
        return None, self._model.facts.context_length

    @property
    def reserved(self) -> int:
        return len(self._caches) + sum(p.copies for p in self._pending)

    def prefill(self, prompt_ids: Sequence[int], *, copies: int = 1) -> _TorchPrefill:
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError("a prompt needs at least one token")
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        job = _TorchPrefill(self, ids, copies)
        self._pending.append(job)
        return job

    def join(self, prefill: Prefill) -> torch.Tensor:
        assert isinstance(prefill, _TorchPrefill) and prefill in self._pending
        if prefill.logits is None:
            raise ValueError("join a prefill only when it is done (advance() returned True)")
        self._pending.remove(prefill)
        # Rows sharing a prompt start from copies of its cache: the same numbers, bit for bit.
        cache = prefill.cache
        self._caches += [cache] + [copy.deepcopy(cache) for _ in range(prefill.copies - 1)]
        self._length += [len(prefill.prompt_ids)] * prefill.copies
        new = prefill.logits[None].expand(prefill.copies, -1)  # (copies, V)
        self._logits = torch.cat([self._logits, new])
        return new

    @torch.inference_mode()
    def _forward(self, ids: list[int], cache: Any, start: int) -> torch.Tensor:
        """``(V,)`` float32 logits after ``ids``, appended to ``cache`` at position ``start``."""
        device = self._model.device
        tokens = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
        position = torch.arange(start, start + len(ids), device=device)[None]  # (1, T)
        out = self._model.model(input_ids=tokens, position_ids=position, cache=cache,
                                use_cache=True, **self._extra)
        logits: torch.Tensor = out.logits[0, -1].float()  # (V,)
        return logits

    @property
    def logits(self) -> torch.Tensor:
        return self._logits

    def keep(self, rows: Sequence[int]) -> None:
        self._caches = [self._caches[i] for i in rows]
        self._length = [self._length[i] for i in rows]
        self._logits = self._logits[list(rows)]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.tolist()
        self._logits = torch.stack([
            self._forward([int(t)], cache, n)
            for t, cache, n in zip(ids, self._caches, self._length, strict=True)])  # (B, V)
        self._length = [n + 1 for n in self._length]
        return self._logits

    def close(self) -> None:
        self._caches = []
        self._pending = []


class _TorchPrefill(ChunkedPrefill):
    """A prompt entering a :class:`RowwiseSession`, one chunk of :data:`PREFILL_CHUNK` tokens
    per :meth:`advance`."""

    def __init__(self, session: RowwiseSession, ids: list[int], copies: int) -> None:
        from transformers import DynamicCache

        super().__init__(ids, copies)
        self._session = session
        self.cache = DynamicCache()
        self.logits: torch.Tensor | None = None  # (V,) once done

    def advance(self) -> bool:
        if self.logits is None:
            a = self._pos
            b = min(len(self.prompt_ids), a + PREFILL_CHUNK)
            out = self._session._forward(self.prompt_ids[a:b], self.cache, a)
            self._pos = b
            if b == len(self.prompt_ids):
                self.logits = out
        return self.done

    def cancel(self) -> None:
        if self in self._session._pending:
            self._session._pending.remove(self)


class TorchSession:
    """Rows decoding together over one left-padded ``DynamicCache`` (the batched layout; see
    the module docstring)."""

    def __init__(self, model: LoadedModel, prompts: Sequence[Sequence[int]]) -> None:
        from transformers import DynamicCache

        self._model = model
        device = model.device
        # Only the last position's logits: at V = 49,152 the head is ~20 % of the model.
        self._extra = {"logits_to_keep": 1} if model.supports_logits_to_keep else {}
        # Prefill each distinct prompt once, then copy its cache rows to every row using it.
        unique: dict[tuple[int, ...], int] = {}
        owner = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        eos = sorted(model.eos_token_ids)
        ids, mask = _left_pad([list(p) for p in unique], eos[0] if eos else 0)
        position = (mask.cumsum(-1) - 1).clamp(min=0)  # (U, L): real tokens count from 0
        self._cache = DynamicCache()
        with torch.inference_mode():
            out = model.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                              position_ids=position.to(device), cache=self._cache,
                              use_cache=True, **self._extra)
        expand = torch.tensor(owner, dtype=torch.long)
        self._logits: torch.Tensor = out.logits[:, -1, :][expand.to(device)].float()  # (B, V)
        if len(unique) != len(prompts) or owner != list(range(len(prompts))):
            self._cache.batch_select_indices(expand.to(device))
        self._mask = mask[expand].to(device)  # (B, L)
        self._position = position[expand, -1].to(device)  # (B,)

    @property
    def can_join(self) -> bool:
        return False  # rows left-padded together: they start together

    @property
    def capacity(self) -> tuple[int | None, int]:
        return None, self._model.facts.context_length

    @property
    def reserved(self) -> int:
        return int(self._logits.shape[0])

    def prefill(self, prompt_ids: Sequence[int], *, copies: int = 1) -> Prefill:
        raise EngineError("rows cannot join a session of the batched layout (reproducible="
                          "False): open a new session when this one has finished")

    def join(self, prefill: Prefill) -> torch.Tensor:
        raise EngineError("rows cannot join a session of the batched layout")

    @property
    def logits(self) -> torch.Tensor:
        return self._logits

    def keep(self, rows: Sequence[int]) -> None:
        index = torch.tensor(list(rows), dtype=torch.long, device=self._model.device)
        self._cache.batch_select_indices(index)
        self._mask, self._position = self._mask[index], self._position[index]
        self._logits = self._logits[index]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        rows = tokens.shape[0]
        self._mask = torch.cat([self._mask, self._mask.new_ones((rows, 1))], dim=1)
        self._position = self._position + 1
        out = self._model.model(input_ids=tokens.to(self._model.device)[:, None],
                                attention_mask=self._mask,
                                position_ids=self._position[:, None], cache=self._cache,
                                use_cache=True, **self._extra)
        self._logits = out.logits[:, -1, :].float()  # (rows, V)
        return self._logits

    def close(self) -> None:
        self._cache = None  # type: ignore[assignment]


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-align prompts: ``(ids, mask)``, both ``(B, L)`` int64, mask 1 on real tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer's named special tokens, e.g. ``{"bos_token": "<s>", "eos_token": "</s>"}``."""
    names = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
             "mask_token")
    found: dict[str, str] = {}
    for name in names:
        value = getattr(tokenizer, name, None)
        if value:
            found[name] = str(value)
    return found


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: each printable stand-in character -> its byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _first_attr(cfg: Any, *names: str) -> Any:
    for n in names:
        value = getattr(cfg, n, None)
        if value is not None:
            return value
    return 0


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
