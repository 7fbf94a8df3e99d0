"""How much one command may ask for, said before the work starts.

Before a model loads: at most :data:`MAX_ROWS` samples per command (``generate``: temperatures
x ``--n``; ``sweep``: one prompt's configs x temperatures x ``--n``, which decode together,
and ``--batch-rows``), ``--max-new-tokens`` at most :data:`MAX_NEW_TOKENS`. After it loads,
the two things only the model knows: its context bounds ``--max-new-tokens``, and a rough
estimate of the memory the batch takes must fit in what this machine has free.

The estimate, per decoding session of ``b`` rows (an engine with a row limit, llama.cpp's 64,
runs longer batches in sessions of that many)::

    b x V x 4 bytes x LOGIT_BUFFERS            float32 (b, V) tensors alive in one step
  + b x tokens x layers x 2 x width x bytes    the KV cache (an upper bound: models with
                                               grouped-query attention keep less)
  + the step records the command keeps         STEP_BYTES per generated token, and more
                                               per listed alternative
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend

MAX_ROWS = 4096  # samples one command decodes together; bigger studies: `tempscope sweep`
MAX_NEW_TOKENS = 1 << 20  # above any model's context; the model's own is checked after loading
MAX_TOP = 100  # rows of a tour table, alternatives per trace step: more do not fit on a screen
LOGIT_BUFFERS = 12  # logits, raw and processed log-probs, probabilities, the samplers' scratch
STEP_BYTES = 800  # Python objects per generated token (a StepEvent), measured
ALTERNATIVE_BYTES = 150  # and per alternative token it lists
RECORD_BYTES = 300  # per token of a finished sweep record (lists of numbers and strings)
GIB = 1 << 30
MEMORY_ADVICE = ("ask for fewer samples (--n, temperatures, prompts) or fewer --max-new-tokens; "
                 "`tempscope sweep` runs big grids batch by batch")


def check_range(value: int, option: str, *, high: int, low: int = 1) -> int:
    """``value`` if ``low <= value <= high``, else a one-line error naming the option."""
    if not low <= value <= high:
        raise ValueError(f"{option} must be a whole number from {low:,} to {high:,}, got "
                         f"{value:,}")
    return value


def check_rows(rows: int, what: str, fix: str) -> None:
    """At most :data:`MAX_ROWS` samples decode together; ``what`` says how ``rows`` arose."""
    if rows > MAX_ROWS:
        raise ValueError(f"{what} = {rows:,} samples decoding together; at most {MAX_ROWS:,} "
                         f"can: {fix}")


def step_bytes(alternatives: int) -> int:
    """Memory one kept step event takes, listing ``alternatives`` candidate tokens."""
    return STEP_BYTES + ALTERNATIVE_BYTES * alternatives


def check_context(model: Backend, prompt_tokens: int, max_new_tokens: int) -> None:
    """``--max-new-tokens`` must fit in the model's context after the longest prompt."""
    facts = model.facts
    room = facts.context_length - prompt_tokens
    if room < 1:
        raise ValueError(f"the prompt takes {prompt_tokens:,} tokens and {facts.name} reads at "
                         f"most {facts.context_length:,}: shorten the prompt")
    if max_new_tokens > room:
        raise ValueError(f"--max-new-tokens {max_new_tokens:,} does not fit: {facts.name} reads "
                         f"at most {facts.context_length:,} tokens and the prompt takes "
                         f"{prompt_tokens:,}, so use --max-new-tokens {room:,} or fewer")


def check_memory(model: Backend, *, session_rows: int, tokens_per_row: int, host_bytes: int,
                 option: str, value: int, free: int | None = None) -> None:
    """Refuse a batch whose estimated memory (module docstring) exceeds what is free.

    Args:
        model: the loaded model (vocabulary, layers, width, dtype, device, row limit).
        session_rows: rows asked to decode together; capped here by the engine's row limit.
        tokens_per_row: prompt plus new tokens of the longest row.
        host_bytes: what the command keeps in Python objects (step events, records).
        option, value: the option to lower in the message (e.g. ``--n``, 1000) and its value;
            the message says about how far, assuming memory grows with it.
        free: bytes free (default :func:`free_memory`); ``None`` there skips the check.
    """
    facts = model.facts
    rows = min(session_rows, model.max_rows or session_rows)
    element = 4 if facts.dtype == "float32" else 2  # KV cache: the weights' float, f16 on GGUF
    tensors = (rows * facts.vocab_size * 4 * LOGIT_BUFFERS
               + rows * tokens_per_row * facts.layers * 2 * facts.embedding_dim * element)
    gpu = model.device.type == "cuda"
    if gpu:
        import torch

        _check(tensors, torch.cuda.mem_get_info(model.device)[0], f"{facts.device} memory",
               option, value)
        tensors = 0
    available = free_memory() if free is None else free
    if available is not None:
        _check(tensors + host_bytes, available, "memory", option, value)


def _check(need: int, available: int, where: str, option: str, value: int) -> None:
    if need <= available:
        return
    fits = value * available // need
    fix = f"use {option} {fits:,} or less" if fits >= 1 else MEMORY_ADVICE
    raise ValueError(f"{option} {value:,} needs about {need / GIB:.1f} GiB of {where}, about "
                     f"{available / GIB:.1f} GiB is free on this machine: {fix}")


def free_memory() -> int | None:
    """Bytes of RAM this process can still take: Linux's MemAvailable, lowered by a cgroup
    memory limit (containers); ``None`` where neither can be read (then nothing is checked)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            left = max(0, int(limit) - used)
            free = left if free is None else min(free, left)
    except (OSError, ValueError):
        pass
    return free
