"""What every route needs: the model, its served name, the caps and the batcher."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from tempscope.server.batcher import Batcher, BatcherBusy, Job
from tempscope.server.errors import APIError
from tempscope.server.limits import ServerLimits

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend
    from tempscope.engine.loop import RowSpec

DEFAULT_ALIAS = "default"  # a model name that always means the served model
LOGITS_CACHE_SIZE = 16  # recent prompts whose last-position logits are kept


@dataclass
class ServerState:
    model: Backend
    name: str  # the model id /v1/models lists
    limits: ServerLimits
    batcher: Batcher
    api_key: str | None
    # Forward passes outside the batcher (/v1/distribution) that may run at once.
    model_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    # Last-position logits of recent prompts (token ids -> (V,) tensor): ``last_logits``.
    logits_cache: OrderedDict[tuple[int, ...], Any] = field(default_factory=OrderedDict)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)

    def last_logits(self, ids: Sequence[int]) -> tuple[Any, bool]:
        """``(V,)`` float32 last-position logits after ``ids`` and whether they came from the
        cache (recent prompts are kept, so a slider moving costs no forward pass). Blocking:
        call it from a worker thread."""
        from tempscope.engine.nexttoken import last_logits

        key = tuple(ids)
        with self.cache_lock:
            hit = self.logits_cache.get(key)
            if hit is not None:
                self.logits_cache.move_to_end(key)
                return hit, True
        out = last_logits(self.model, list(ids)).float().reshape(-1)  # (V,)
        with self.cache_lock:
            self.logits_cache[key] = out
            while len(self.logits_cache) > LOGITS_CACHE_SIZE:
                self.logits_cache.popitem(last=False)
        return out, False

    def check_model(self, requested: str | None) -> None:
        """404 unless ``requested`` names the served model (or is None / ``"default"``)."""
        if requested is None or requested in (self.name, DEFAULT_ALIAS):
            return
        raise APIError(404, f"the model {requested!r} does not exist here; this server serves "
                       f"{self.name!r} (or use {DEFAULT_ALIAS!r})", param="model",
                       code="model_not_found")

    def submit(self, rows: Sequence[RowSpec], *, top_alternatives: int, events: bool) -> Job:
        """Queue rows on the batcher; 503 when the queue is full."""
        try:
            return self.batcher.submit(rows, top_alternatives=max(top_alternatives, 1),
                                       events=events)
        except BatcherBusy as exc:
            raise APIError(503, f"the server is busy: {exc}", type="server_error",
                           code="server_busy") from None


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.tempscope
    return state
