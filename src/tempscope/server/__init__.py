"""``tempscope serve``: an OpenAI-compatible API with next-token distributions and a browser
playground. Build the app with :func:`create_app`; run it with uvicorn.

``create_app`` is imported on first use, so the CLI can read :class:`ServerLimits` (the
defaults ``serve --help`` shows) without importing FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tempscope.server.limits import ServerLimits

if TYPE_CHECKING:
    from tempscope.server.app import create_app

__all__ = ["ServerLimits", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tempscope.server.app import create_app

        return create_app
    raise AttributeError(f"module 'tempscope.server' has no attribute {name!r}")
