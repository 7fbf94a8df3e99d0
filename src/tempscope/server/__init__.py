"""``tempscope serve``: an OpenAI-compatible API with next-token distributions and a browser
playground. Build the app with :func:`create_app`; run it with uvicorn."""

from tempscope.server.app import create_app
from tempscope.server.limits import ServerLimits

__all__ = ["ServerLimits", "create_app"]
