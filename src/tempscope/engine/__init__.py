"""Engines: the one door through which tempscope reaches a model.

- :mod:`tempscope.engine.backend`: the :class:`Backend` / :class:`Session` protocol and
  :class:`ModelFacts` (no torch import);
- :mod:`tempscope.engine.torch_backend`: transformers models on CUDA, MPS or the CPU;
- :mod:`tempscope.engine.llamacpp`: GGUF files as they are, through llama-cpp-python.

:func:`tempscope.load_model` picks one (``engine="auto" | "torch" | "llama.cpp"``).
"""

from tempscope.engine.backend import ENGINE_CHOICES, Backend, EngineName, ModelFacts, Session

__all__ = ["ENGINE_CHOICES", "Backend", "EngineName", "ModelFacts", "Session"]
