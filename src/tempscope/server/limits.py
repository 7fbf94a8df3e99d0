"""Caps that keep one request from taking the server down."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    """Per-server caps; a request over any of them gets a 400 (413 for the body size).

    Every field is a plain ceiling; the defaults suit a laptop CPU and a small model.
    """

    max_tokens: int = 1024  # most new tokens per choice
    default_chat_max_tokens: int = 256  # chat's max_tokens when the client sends none
    max_n: int = 16  # most choices per prompt
    max_rows: int = 32  # most rows (prompts x n) one request may start
    max_prompts: int = 16  # most prompts in one completions request
    max_prompt_tokens: int = 4096  # most prompt tokens (the model's context may cap it lower)
    max_request_prompt_tokens: int = 8192  # most prompt tokens of all of one request's prompts
    # Text longer than the token caps x this many characters is refused before it is
    # tokenized: real text runs 3-6 characters a token, and a tokenizer can take quadratic
    # time on pathological text (llama.cpp: 21 s for 90,000 copies of "<|im_end|>").
    prompt_chars_per_token: int = 32
    max_batch_prompt_tokens: int = 8192  # prompt tokens admitted and not yet prefilled (a
    # request over it runs when no other prompt waits; requests are never split)
    max_body_bytes: int = 1_000_000  # request body size (413 above it)
    max_stop: int = 4  # most stop strings, as OpenAI allows
    max_stop_chars: int = 200  # longest stop string
    max_top_logprobs: int = 20  # most alternatives per token in logprobs
    max_temperatures: int = 16  # most temperatures in one /v1/distribution call
    max_top: int = 200  # longest top-N table in /v1/distribution
    max_batch_rows: int = 64  # most rows decoding (or prefilling) at once, every request's
    batch_window_ms: float = 0.0  # when idle, how long the scheduler waits for requests sent
    # at the same moment to share the first prefill. 0: a request that finds the server idle
    # starts at once, as in llama-server and vLLM (one arriving a moment later joins at the
    # next step); any wait here is added to the first token of every request that finds the
    # server idle
    max_queued_rows: int = 1024  # rows waiting before new requests get a 503
    body_timeout_s: float = 30.0  # a client that sends no body bytes for this long gets a 408
    header_timeout_s: float = 10.0  # request headers not complete after this long: closed
