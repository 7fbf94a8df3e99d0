"""Engines: the one door through which tempscope reaches a model.

- :mod:`tempscope.engine.backend`: the :class:`Backend` / :class:`Session` protocol and
  :class:`ModelFacts` (no torch import);
- :mod:`tempscope.engine.torch_backend`: transformers models on CUDA, MPS or the CPU;
- :mod:`tempscope.engine.llamacpp`: GGUF files as they are, through llama-cpp-python;
- :mod:`tempscope.engine.loader`: :func:`~tempscope.engine.loader.load_model` picks one
  (``engine="auto" | "torch" | "llama.cpp"``); :mod:`tempscope.engine.gguf_cache` dequantizes
  a GGUF file once for torch;
- :mod:`tempscope.engine.loop`: the one generation loop; :mod:`tempscope.engine.nexttoken`:
  many temperatures from one forward pass; :mod:`tempscope.engine.scoring`: the
  log-likelihood of given text;
- :mod:`tempscope.engine.generator`: one interface for a local model and a server, whose
  client and remote engine live in :mod:`tempscope.engine.remote`.

Nothing outside this package touches a transformers model, a torch KV cache or a llama.cpp
context. Importing it stays light: only the protocol's names load here.
"""

from tempscope.engine.backend import ENGINE_CHOICES, Backend, EngineName, ModelFacts, Session

__all__ = ["ENGINE_CHOICES", "Backend", "EngineName", "ModelFacts", "Session"]
