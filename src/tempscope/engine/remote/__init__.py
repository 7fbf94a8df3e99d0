"""Any OpenAI-compatible server behind the same generator API as a local model.

- :mod:`tempscope.engine.remote.client`: :class:`RemoteClient`, the one module that talks HTTP
  (retries, feature detection, neutral values for the samplers left off);
- :mod:`tempscope.engine.remote.wire`: llama-server's names and the log-probability formats
  (no HTTP, no torch);
- :mod:`tempscope.engine.remote.engine`: samples and next-token views from a server, the
  remote half of :class:`tempscope.engine.generator.Generator`.

The client's names are imported here at once; the engine's (which import torch) on first use,
so ``from tempscope.engine.remote import RemoteClient`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tempscope.engine.remote.client import RemoteClient, RemoteError

if TYPE_CHECKING:
    from tempscope.engine.remote.engine import (
        RemoteNextToken,
        RemoteSample,
        remote_generate,
        remote_next_token,
    )

_FROM_ENGINE = frozenset({"RemoteNextToken", "RemoteSample", "remote_generate",
                          "remote_next_token"})


def __getattr__(name: str) -> Any:
    if name not in _FROM_ENGINE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("tempscope.engine.remote.engine"), name)


__all__ = ["RemoteClient", "RemoteError", "RemoteNextToken", "RemoteSample", "remote_generate",
           "remote_next_token"]
