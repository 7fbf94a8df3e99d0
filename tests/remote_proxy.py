"""A tiny threaded HTTP proxy for the remote-engine tests: forwards to an upstream server and
injects faults (statuses for the next requests, a refused field, a hook before a request)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@dataclass
class Faults:
    upstream: str  # http://127.0.0.1:PORT (no /v1)
    statuses: list[int] = field(default_factory=list)  # answer the next requests with these
    refuse: set[str] = field(default_factory=set)  # 400 naming the field when a body has it
    before: Callable[[int], None] | None = None  # called with the request count (1-based)
    count: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)  # forwarded JSON bodies
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def fault_proxy(upstream: str) -> Iterator[tuple[str, Faults]]:
    """Run the proxy on a free loopback port; yields ``(base_url ending in /v1, faults)``."""
    faults = Faults(upstream)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with faults.lock:
                faults.count += 1
                count = faults.count
                status = faults.statuses.pop(0) if faults.statuses else None
            if faults.before is not None:
                faults.before(count)
            if status is not None:
                msg = {"error": {"message": f"injected {status}", "type": "server_error"}}
                self._send(status, json.dumps(msg).encode())
                return
            body = json.loads(raw) if raw else None
            if isinstance(body, dict):
                bad = sorted(faults.refuse & set(body))
                if bad:
                    msg = {"error": {"message": f"Unrecognized request argument: {bad[0]}",
                                     "param": bad[0], "type": "invalid_request_error"}}
                    self._send(400, json.dumps(msg).encode())
                    return
                with faults.lock:
                    faults.seen.append(body)
            try:
                r = httpx.request(self.command, faults.upstream + self.path, content=raw,
                                  headers={"Content-Type": "application/json"}, timeout=120)
            except httpx.HTTPError:
                self._send(502, b'{"error": {"message": "upstream down"}}')
                return
            self._send(r.status_code, r.content)

        do_GET = _handle
        do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", faults
    finally:
        server.shutdown()
        server.server_close()
