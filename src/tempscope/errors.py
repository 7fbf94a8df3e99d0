"""Errors tempscope raises on purpose: each message says what was wrong and what to do."""

from __future__ import annotations


class TempscopeError(Exception):
    """Base class: an error a user can fix; the CLI prints its message without a traceback."""


class ModelLoadError(TempscopeError):
    """A model could not be found, reached or loaded."""


class EngineError(TempscopeError):
    """An engine could not do what was asked (e.g. llama.cpp's KV cache is full): the message
    says how to ask for less."""
