"""The llama.cpp engine: a GGUF file as it is (no dequantization, no cache to build), through
llama-cpp-python's low-level API, behind :class:`~tempscope.engine.backend.Backend`.

- Every live row of a decoding session is its own llama.cpp sequence with its own KV stream
  (``kv_unified = False``): its cells sit at the same places, in the same order, whatever else
  decodes beside it, so its logits are bit-identical alone and in any batch (batch
  invariance; docs/engines.md has the measurements). All rows decode in ONE ``llama_decode``
  per step.
- Flash attention is off: with it, a lone sequence with a long context came out differently
  from the same row beside others (measured; docs/engines.md).
- Each distinct prompt is prefilled on its own, in chunks of :data:`N_BATCH` counted from its
  first token, so a prompt's prefill never depends on the other prompts; rows sharing a prompt
  get a copy of its stream (``llama_memory_seq_cp``), bit for bit.
- llama.cpp only computes logits here: the full ``(rows, V)`` logits go through tempscope's own
  sampler chain, so samplers, their order, seeds and step events are those of the torch engine.
- A ``llama_context`` is not thread-safe: one thread (``tempscope-llama``) owns it and runs
  every call on it, whichever thread asks (the server's batcher, its distribution route).
- The context is made on demand with enough streams (rows + the one-off sequence) and cells
  per stream (the longest prompt plus the token budget) and kept while later sessions fit it.
  Sequence id 0 is kept for one-off calls (next-token logits, scoring).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
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
from tempscope.errors import EngineError, ModelLoadError

T = TypeVar("T")

INSTALL_HINT = ("install it with `pip install 'tempscope[llama]'` (llama-cpp-python compiles "
                "from source, ~10 minutes once), or use --engine torch")
MAX_ROWS = 64  # sequences decoded together; longer row lists run in chunks of this many
SEQ_CELLS = 256  # smallest KV stream (tokens of one sequence); llama.cpp pads streams to 256
KEEP_CELLS = 1 << 16  # a context grown past this many cells is remade at the size asked for
SCRATCH = 0  # the sequence id of one-off calls; rows use 1..MAX_ROWS
N_BATCH = 512  # most tokens one llama_decode call takes (a prefill chunk: cancellable between)
REUSE_MIN = 16  # shortest held prefix worth a stream copy instead of a fresh prefill


def available() -> bool:
    """True when llama-cpp-python can be imported."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def gpu_offload() -> bool:
    """True when the installed llama.cpp was built with GPU support."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def default_threads() -> int:
    """``$TEMPSCOPE_THREADS``, else every core this process may use (llama-cpp-python's own
    default is half of them)."""
    value = os.environ.get("TEMPSCOPE_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"TEMPSCOPE_THREADS must be a whole number >= 1, got {value!r}")
        return n
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


class LlamaCppModel:
    """A GGUF model on llama.cpp. Build it with :func:`tempscope.load_model` (``engine=
    "llama.cpp"``), or directly from a path.

    Args:
        path: the ``.gguf`` file.
        name: what the user asked for.
        source: ``"embedded"`` or ``"gguf"``.
        n_threads: CPU threads for decoding (default :func:`default_threads`).
        gpu: offload every layer to the GPU when llama.cpp was built with GPU support.
        kv_unified: one pool of KV cells for all sequences instead of a stream per sequence.
            Only for measuring (``bench/invariance.py``): rows then depend on their neighbours.
        flash_attn: llama.cpp's flash attention (None = llama.cpp decides). Off by default:
            for one sequence with a long context its CPU kernel sums in another order than
            for several (a row alone with a 700-token prompt moved by up to 0.87 in a logit
            beside 3 others), which would break batch invariance.
    """

    engine: EngineName = "llama.cpp"
    cache_path: Path | None = None  # nothing is converted
    max_rows: int | None = MAX_ROWS

    def __init__(self, path: Path, name: str, *, source: str = "gguf",
                 n_threads: int | None = None, gpu: bool = False, kv_unified: bool = False,
                 flash_attn: bool | None = False) -> None:
        try:
            import llama_cpp
            from llama_cpp import _internals
        except ImportError as exc:
            raise ModelLoadError(f"the llama.cpp engine needs llama-cpp-python: {INSTALL_HINT}"
                                 ) from exc
        # llama.cpp's threads own the cores. torch runs only the sampler chain here, on
        # (rows, V) tensors; with its own thread pool spinning on the same cores after every
        # op, decoding ran at half speed (66 vs 130 tok/s at batch 1 on 2 cores, measured),
        # and one torch thread does those ops at no loss (the 48-row sweep: 194 vs 177 tok/s).
        torch.set_num_threads(1)
        # llama.cpp's own log lines (some at level NONE, which llama-cpp-python shows even
        # when not verbose) stay off: every failure reaches the user as a tempscope error.
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL + 1)
        self._lib: Any = llama_cpp
        self._internals: Any = _internals
        self.name = name
        self.source = source
        self.path = Path(path)
        self.n_threads = n_threads or default_threads()
        self._owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tempscope-llama")
        self._owner_thread: threading.Thread | None = None
        self._lock = threading.RLock()  # one call into llama.cpp at a time, from any thread
        self._here: collections.Counter[int] = collections.Counter()  # see calls_here
        self._session_open = False
        self._held: dict[int, list[int]] = {}  # sequence id -> tokens its stream holds
        self.prefix_tokens_reused = 0  # prompt tokens taken from the prefix cache so far
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = -1 if gpu and llama_cpp.llama_supports_gpu_offload() else 0
        self._gpu = params.n_gpu_layers != 0
        try:
            self._model: Any = self._call(lambda: _internals.LlamaModel(
                path_model=str(self.path), params=params, verbose=False))
        except ValueError as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {str(path)!r}: {exc} (is it a complete GGUF file "
                "of an architecture this llama.cpp supports? try --engine torch)") from None
        self._vocab = self._model.vocab
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.kv_unified = kv_unified
        self.flash_attn = flash_attn
        self._ctx: Any = None
        self._shape = (0, 0)  # the context's (streams, cells per stream)
        self._meta: dict[str, str] = self._model.metadata()
        self._token_texts: dict[int, str] = {}
        self._pieces: dict[int, bytes] = {}
        self._facts: ModelFacts | None = None
        self._eos: list[int] | None = None
        self._chat: Any = None

    def __repr__(self) -> str:
        return (f"LlamaCppModel(name={self.name!r}, source={self.source!r}, "
                f"engine='llama.cpp', threads={self.n_threads}, dtype={self._file_type()})")

    # ------------------------------------------------------------------- the owning thread

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread that owns the llama.cpp context, or on this one inside
        :meth:`calls_here`; one call at a time either way."""
        if (threading.current_thread() is self._owner_thread
                or self._here[threading.get_ident()]):
            with self._lock:
                return fn()

        def run() -> T:
            self._owner_thread = threading.current_thread()
            with self._lock:
                return fn()

        return self._owner.submit(run).result()

    @contextlib.contextmanager
    def calls_here(self) -> Iterator[None]:
        """Within the block this thread calls llama.cpp itself, under the same lock, instead
        of handing each call to the owner thread and waiting: a decoding loop saves two
        thread switches a token (about a quarter of a millisecond a step on 2 cores, where
        the server's event loop also wants the interpreter). Each thread that calls into
        llama.cpp keeps an OpenMP team of its own: keep this to the one decoding thread."""
        me = threading.get_ident()
        self._here[me] += 1
        try:
            yield
        finally:
            self._here[me] -= 1
            if not self._here[me]:
                del self._here[me]

    def _context(self, streams: int, cells: int) -> Any:
        """The context, made (again) when it lacks ``streams`` sequences (the one-off one
        included) or ``cells`` KV cells per sequence; owner thread only. Kept while later
        calls fit it; grown to the larger of old and new, unless that passes
        :data:`KEEP_CELLS` cells in all (then made at the size asked for)."""
        have_streams, have_cells = self._shape
        if self._ctx is not None and have_streams >= streams and have_cells >= cells:
            return self._ctx
        train = self._model.n_ctx_train()
        want_cells = max(SEQ_CELLS, 1 << (max(cells, 1) - 1).bit_length())
        want_streams = min(MAX_ROWS + 1, 1 << (max(streams, 1) - 1).bit_length())
        grown = (max(want_streams, have_streams), max(want_cells, have_cells))
        if grown[0] * grown[1] <= KEEP_CELLS:
            want_streams, want_cells = grown
        params = self._lib.llama_context_default_params()
        params.n_ctx = want_cells * want_streams  # a stream each: n_ctx / n_seq_max cells
        params.n_batch = N_BATCH
        params.n_ubatch = min(512, N_BATCH)
        params.n_seq_max = want_streams
        # A stream per sequence: a row's cells do not move with its neighbours (see the
        # module docstring); one pool (measuring only) lets them interleave.
        params.kv_unified = self.kv_unified
        if self.flash_attn is not None:
            params.flash_attn_type = (self._lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn
                                      else self._lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.n_threads = params.n_threads_batch = self.n_threads
        params.no_perf = True
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
            self._shape = (0, 0)
        self._held.clear()
        try:
            self._ctx = self._internals.LlamaContext(model=self._model, params=params,
                                                     verbose=False)
        except ValueError:
            raise EngineError(
                f"llama.cpp could not make a context of {want_streams} sequences x "
                f"{want_cells} cells (the model's own context is {train}); use fewer rows or "
                "shorter prompts") from None
        self._shape = (want_streams, want_cells)
        return self._ctx

    # ------------------------------------------------------------------------------ facts

    @property
    def reproducible(self) -> bool:
        """Batch-invariant unless built for measuring with ``kv_unified`` or flash attention
        (see the module docstring); there is no faster layout to trade it for."""
        return not self.kv_unified and not self.flash_attn

    @property
    def joinable(self) -> bool:
        return True

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # logits come back to host memory; samplers run there

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    @property
    def eos_token_ids(self) -> list[int]:
        """The vocabulary's end-of-generation tokens (eos, eot and every other ``is_eog``)."""
        if self._eos is None:
            lib, vocab = self._lib, self._vocab
            first = [int(lib.llama_vocab_eos(vocab)), int(lib.llama_vocab_eot(vocab))]
            found = [t for t in first if t >= 0]
            found += [t for t in range(self._n_vocab)
                      if t not in found and lib.llama_vocab_is_eog(vocab, t)]
            self._eos = list(dict.fromkeys(found))
        return self._eos

    @property
    def bos_token_id(self) -> int | None:
        bos = int(self._lib.llama_vocab_bos(self._vocab))
        return bos if bos >= 0 else None

    @property
    def has_chat_template(self) -> bool:
        return bool(self._meta.get("tokenizer.chat_template"))

    def _file_type(self) -> str:
        desc = self._model.desc()  # e.g. "llama 135M Q4_1"
        return str(desc.rsplit(" ", 1)[-1]) if desc else "gguf"

    @property
    def facts(self) -> ModelFacts:
        if self._facts is None:
            arch = self._meta.get("general.architecture", "unknown")
            special: dict[str, str] = {}
            special_ids: dict[str, int] = {}
            lib = self._lib
            for key, fn in (("bos_token", lib.llama_vocab_bos), ("eos_token", lib.llama_vocab_eos),
                            ("pad_token", lib.llama_vocab_pad)):
                tok = int(fn(self._vocab))
                if 0 <= tok < self._n_vocab:
                    special[key] = self._piece(tok, special=True).decode("utf-8", "replace")
                    special_ids[key] = tok
            self._facts = ModelFacts(
                name=self.name, source=self.source, architecture=arch,
                parameters=int(self._model.n_params()), vocab_size=self._n_vocab,
                embedding_dim=int(self._model.n_embd()),
                heads=int(self._meta.get(f"{arch}.attention.head_count", "0") or 0),
                layers=int(lib.llama_model_n_layer(self._model.model)),
                context_length=int(self._model.n_ctx_train()),
                special_tokens=special, special_token_ids=special_ids,
                device="cuda" if self._gpu else "cpu", dtype=self._file_type(),
                has_chat_template=self.has_chat_template, engine=self.engine,
            )
        return self._facts

    # ------------------------------------------------------------------------- text <-> ids

    def encode(self, text: str, *, chat: bool = False) -> list[int]:
        if chat:
            if not self.has_chat_template:
                raise ValueError(
                    f"model {self.name!r} has no chat template: drop --chat (chat=True) or use "
                    "a chat model such as the embedded default")
            return self.encode_chat([{"role": "user", "content": text}])
        add_bos = bool(self._lib.llama_vocab_get_add_bos(self._vocab))
        return self._tokenize(text, add_bos=add_bos)

    def _tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        data = check_text(text, "the prompt").encode("utf-8")
        return [int(t) for t in self._model.tokenize(data, add_bos, True)]

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if not self.has_chat_template:
            raise ValueError(f"model {self.name!r} has no chat template")
        for m in messages:
            check_text(str(m.get("content", "")), "a message")
        if self._chat is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            facts = self.facts
            self._chat = Jinja2ChatFormatter(
                self._meta["tokenizer.chat_template"],
                eos_token=facts.special_tokens.get("eos_token", ""),
                bos_token=facts.special_tokens.get("bos_token", ""))
        try:
            text = self._chat(messages=list(messages)).prompt
        except Exception as exc:  # jinja raises its own errors for conversations it rejects
            raise ValueError(f"the model's chat template rejected these messages: {exc}"
                             ) from None
        return self._tokenize(str(text), add_bos=False)

    def _piece(self, token_id: int, *, special: bool = True) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token_id, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token_id, buf, -n, 0, special)
        return bytes(buf.raw[:n])

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(int(token_id))
        return piece

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", "replace")

    def token_text(self, token_id: int) -> str:
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.token_bytes(token_id).decode(
                "utf-8", "replace")
        return text

    # ------------------------------------------------------------------------------- logits

    def _decode(self, ctx: Any, entries: Sequence[tuple[int, int, int, bool]],
                should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """One or more ``llama_decode`` calls over ``(token, position, seq_id, want_logits)``
        entries; returns the logits of the wanted entries, ``(n, V)`` float32, in order.
        ``should_stop`` is asked before every call after the first (raises Cancelled)."""
        lib = self._lib
        outs: list[np.ndarray] = []
        for start in range(0, len(entries), N_BATCH):
            if start and should_stop is not None and should_stop():
                raise Cancelled
            chunk = entries[start:start + N_BATCH]
            batch = lib.llama_batch_init(len(chunk), 0, 1)
            try:
                wanted = 0
                for i, (tok, pos, seq, want) in enumerate(chunk):
                    batch.token[i] = tok
                    batch.pos[i] = pos
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = seq
                    batch.logits[i] = want
                    wanted += want
                batch.n_tokens = len(chunk)
                code = lib.llama_decode(ctx.ctx, batch)
                if code != 0:
                    raise EngineError(
                        f"llama_decode failed (code {code}): the KV cache is full or the "
                        "input is invalid; use fewer rows or shorter prompts")
                if wanted:
                    # One memmove out of llama.cpp's buffer (the next decode overwrites it);
                    # np.ctypeslib.as_array would build ctypes array types on every call.
                    out = np.empty((wanted, self._n_vocab), np.float32)
                    ctypes.memmove(out.ctypes.data, lib.llama_get_logits(ctx.ctx), out.nbytes)
                    outs.append(out)
            finally:
                lib.llama_batch_free(batch)
        if not outs:
            return np.empty((0, self._n_vocab), np.float32)
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _forget(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._ctx.memory, seq, -1, -1)

    def _scratch_context(self, tokens: int) -> Any:
        """The context with room for ``tokens`` in the one-off sequence; owner thread only."""
        if not self._session_open:
            return self._context(1, tokens)
        if tokens > self._shape[1]:
            raise EngineError(
                f"{tokens} tokens do not fit beside the decoding session running now (at "
                f"most {self._shape[1]} per sequence): retry when it has finished")
        return self._ctx

    def _scratch_logits(self, ids: list[int], first: int) -> np.ndarray:
        """Logits ``(len(ids) - first, V)`` after each of ``ids[first:]``, decoded in the
        one-off sequence and forgotten again; owner thread only."""
        ctx = self._scratch_context(len(ids))
        try:
            return self._decode(ctx, [(t, p, SCRATCH, p >= first) for p, t in enumerate(ids)])
        finally:
            self._forget(SCRATCH)

    def last_logits(self, prompt_ids: Sequence[int]) -> torch.Tensor:
        ids = [int(i) for i in prompt_ids]
        return self._call(lambda: torch.from_numpy(self._scratch_logits(ids, len(ids) - 1)[0]))

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]],
                          starts: Sequence[int]) -> list[list[float]]:
        def run() -> list[list[float]]:
            out: list[list[float]] = []
            for seq, start in zip(sequences, starts, strict=True):
                ids = [int(i) for i in seq]
                # logits after ids[start - 1 .. -2] predict ids[start ..]
                logits = self._scratch_logits(ids[:-1], start - 1)
                logp = torch.log_softmax(torch.from_numpy(logits).double(), dim=-1)
                target = torch.tensor(ids[start:], dtype=torch.long)
                out.append(logp.gather(1, target[:, None])[:, 0].tolist())
            return out

        return self._call(run)

    def open_session(self, prompts: Sequence[Sequence[int]], *, budget: int = 0,
                     should_stop: Callable[[], bool] | None = None,
                     rows: int | None = None, tokens: int | None = None) -> LlamaCppSession:
        if max(len(prompts), rows or 0) > MAX_ROWS:
            raise ValueError(f"the llama.cpp engine decodes at most {MAX_ROWS} rows at once, "
                             f"got {max(len(prompts), rows or 0)}")
        return LlamaCppSession(self, prompts, budget, should_stop, rows, tokens)

    def position_logits(self, ids: Sequence[int], start: int,
                        reduce: Callable[[torch.Tensor, torch.Tensor], R], *,
                        chunk: int = 256) -> list[R]:
        """Every scored position's logits in blocks (see the protocol): the text decoded in
        the one-off sequence, at most ``min(chunk, N_BATCH)`` tokens per ``llama_decode``,
        ``reduce`` run on the owner thread after each, the sequence forgotten at the end."""
        check_positions(ids, start, chunk)
        toks = [int(i) for i in ids]
        targets = torch.tensor(toks[start:], dtype=torch.long)
        step = min(chunk, N_BATCH)

        def run() -> list[R]:
            ctx = self._scratch_context(len(toks))
            out: list[R] = []
            try:
                for a in range(0, start - 1, N_BATCH):  # the context: KV cells, no logits
                    b = min(a + N_BATCH, start - 1)
                    self._decode(ctx, [(toks[p], p, SCRATCH, False) for p in range(a, b)])
                for a in range(start - 1, len(toks) - 1, step):
                    b = min(a + step, len(toks) - 1)
                    logits = self._decode(ctx, [(toks[p], p, SCRATCH, True)
                                                for p in range(a, b)])  # (b - a, V)
                    out.append(reduce(torch.from_numpy(logits),
                                      targets[a - start + 1: b - start + 1]))
            finally:
                self._forget(SCRATCH)
            return out

        return self._call(run)


class LlamaCppSession:
    """Rows as llama.cpp sequences, one KV stream each; one ``llama_decode`` per step for all.

    Rows join while others run (:meth:`prefill`, then :meth:`join`) and leave at any step
    (:meth:`keep`). A stream that a row has left keeps its cells: the prefix cache. A new
    prompt that starts with tokens some stream holds (a finished row's prompt and text, a
    running row's, a chat's earlier turns) starts from a copy of those cells and computes only
    the rest. Every token's keys, values and logits come from the same per-token arithmetic
    whichever call computes it (a stream per sequence, no flash attention, no tinyBLAS), so a
    reused prefix gives the logits of a fresh prefill bit for bit (tests hold it).
    """

    def __init__(self, model: LlamaCppModel, prompts: Sequence[Sequence[int]],
                 budget: int, should_stop: Callable[[], bool] | None,
                 rows: int | None = None, tokens: int | None = None) -> None:
        if model._session_open:
            raise EngineError("this llama.cpp model already has an open decoding session: "
                              "finish or close it first")
        self._model = model
        longest = max((len(p) for p in prompts), default=1)
        cells = max(longest + budget + 1, tokens or 0)
        # Room for the rows asked for, within KEEP_CELLS cells in all (KV memory), but
        # always for the rows given now.
        per_stream = max(SEQ_CELLS, 1 << (cells - 1).bit_length())
        streams = max(len(prompts) + 1, min((rows or 0) + 1, KEEP_CELLS // per_stream))
        model._call(lambda: model._context(streams, cells))
        model._session_open = True
        self._seqs: list[int] = []  # live row -> sequence id
        self._pos: list[int] = []  # live row -> next position
        self._logits = torch.empty((0, model.vocab_size))
        self._pending: list[_LlamaPrefill] = []
        try:
            prefill_rows(self, prompts, should_stop)
        except BaseException:
            self.close()
            raise

    @property
    def can_join(self) -> bool:
        return True

    @property
    def capacity(self) -> tuple[int | None, int]:
        streams, cells = self._model._shape
        return min(MAX_ROWS, streams - 1), cells

    @property
    def reserved(self) -> int:
        return len(self._seqs) + sum(p.copies for p in self._pending)

    @property
    def logits(self) -> torch.Tensor:
        return self._logits

    def prefill(self, prompt_ids: Sequence[int], *, copies: int = 1) -> _LlamaPrefill:
        ids = [int(t) for t in prompt_ids]
        rows, cells = self.capacity
        if not ids:
            raise ValueError("a prompt needs at least one token")
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        assert rows is not None
        if self.reserved + copies > rows:
            raise EngineError(f"{copies} more rows do not fit this session ({self.reserved} "
                              f"of {rows} taken): wait for rows to finish")
        if len(ids) >= cells:
            raise EngineError(f"a {len(ids)}-token prompt does not fit this session's "
                              f"{cells} tokens per row: wait for it to finish")
        job = self._model._call(lambda: self._start(ids, copies))
        self._pending.append(job)
        return job

    def _start(self, ids: list[int], copies: int) -> _LlamaPrefill:
        """Owner thread: pick the streams, reuse the longest held prefix."""
        model = self._model
        held = model._held
        live = set(self._seqs)
        for p in self._pending:
            live.update(p.seqs)
        free = [q for q in range(1, model._shape[0]) if q not in live]
        best, shared = None, 0
        for q, toks in held.items():
            if q in live and q not in self._seqs:
                continue  # a prefill still running: its cells are not all there
            n = _common_prefix(toks, ids)
            if n > shared:
                best, shared = q, n
        if shared < REUSE_MIN:
            best, shared = None, 0
        # The lowest free streams: llama.cpp attends over the range of streams a step
        # touches (from the lowest to the highest in use), so rows are kept packed low.
        order = sorted(free)
        if best is not None and best in free:
            order.remove(best)
            order.insert(0, best)
        seqs = order[:copies]
        lib, mem = model._lib, model._ctx.memory
        start = min(shared, len(ids) - 1)  # the last token runs again: its logits are needed
        for n, q in enumerate(seqs):
            if n == 0 and q == best:
                lib.llama_memory_seq_rm(mem, q, start, -1)
            else:
                lib.llama_memory_seq_rm(mem, q, -1, -1)
                held.pop(q, None)
        first = seqs[0]
        if best is not None and best != first:
            # Across streams llama.cpp copies whole streams; then cut to the shared prefix.
            lib.llama_memory_seq_cp(mem, best, first, -1, -1)
            lib.llama_memory_seq_rm(mem, first, start, -1)
        held[first] = ids[:start]
        model.prefix_tokens_reused += start
        return _LlamaPrefill(self, ids, copies, seqs, start)

    def join(self, prefill: Prefill) -> torch.Tensor:
        assert isinstance(prefill, _LlamaPrefill) and prefill in self._pending
        if not prefill.done:
            raise ValueError("join a prefill only when it is done (advance() returned True)")
        model = self._model
        first, *rest = prefill.seqs
        ids = prefill.prompt_ids

        def run() -> None:
            for q in rest:  # the same prompt: a bit-exact copy of its stream
                model._lib.llama_memory_seq_cp(model._ctx.memory, first, q, -1, -1)
                model._held[q] = list(ids)

        model._call(run)
        self._pending.remove(prefill)
        self._seqs += prefill.seqs
        self._pos += [len(ids)] * prefill.copies
        assert prefill.logits is not None
        new = torch.from_numpy(prefill.logits).expand(prefill.copies, -1)  # (copies, V)
        self._logits = torch.cat([self._logits, new])
        return new

    def keep(self, rows: Sequence[int]) -> None:
        # The rows that leave keep their cells (the prefix cache); a later prefill reuses or
        # clears them.
        self._seqs = [self._seqs[i] for i in rows]
        self._pos = [self._pos[i] for i in rows]
        self._logits = self._logits[list(rows)]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        toks = [int(t) for t in tokens.tolist()]
        entries = [(t, p, s, True) for t, p, s in zip(toks, self._pos, self._seqs, strict=True)]
        model = self._model
        logits = model._call(lambda: model._decode(model._ctx, entries))
        for t, q in zip(toks, self._seqs, strict=True):
            model._held[q].append(t)
        self._pos = [p + 1 for p in self._pos]
        self._logits = torch.from_numpy(logits)  # (rows, V)
        return self._logits

    def close(self) -> None:
        model = self._model
        if not model._session_open:
            return
        for job in list(self._pending):
            job.cancel()
        self._seqs, self._pos = [], []
        model._session_open = False


class _LlamaPrefill(ChunkedPrefill):
    """A prompt entering a :class:`LlamaCppSession`, one chunk per :meth:`advance`: chunks end
    at multiples of :data:`N_BATCH` counted from the prompt's first token, whatever else runs."""

    def __init__(self, session: LlamaCppSession, ids: list[int], copies: int,
                 seqs: list[int], start: int) -> None:
        super().__init__(ids, copies, start)
        self._session = session
        self.seqs = seqs  # the first computes the prompt; the others get copies at join
        self.reused = start  # prompt tokens whose cells came from the prefix cache
        self.logits: np.ndarray | None = None  # (1, V) once done

    def advance(self) -> bool:
        if self.done:
            return True
        model = self._session._model
        ids, seq, a = self.prompt_ids, self.seqs[0], self._pos
        b = min(len(ids), (a // N_BATCH + 1) * N_BATCH)
        entries = [(ids[p], p, seq, p == len(ids) - 1) for p in range(a, b)]
        out = model._call(lambda: model._decode(model._ctx, entries))
        model._held[seq].extend(ids[a:b])
        self._pos = b
        if b == len(ids):
            self.logits = out
        return self.done

    def cancel(self) -> None:
        session = self._session
        if self in session._pending:
            session._pending.remove(self)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
