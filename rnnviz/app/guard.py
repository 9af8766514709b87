"""What stands between the network and the app: a Host/Origin allow-list and a cap on sessions.

Bokeh checks only the websocket's Origin. A page elsewhere can rebind its own name to
127.0.0.1 (DNS rebinding) and then read the app as same-origin, so :class:`HostGate`
checks the Host header (and any Origin) of every HTTP request, pages, scripts and
websockets alike, before Tornado routes it. :func:`cap_sessions` makes the page
answer "busy" beyond a number of live sessions instead of building one document per
request, however many arrive.
"""
from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

from bokeh.server.views.doc_handler import DocHandler
from tornado import httputil
from tornado.web import Application

log = logging.getLogger(__name__)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def host_key(netloc: str, default_port: int = 80) -> str:
    """``name:port`` in lower case, with the scheme's port where none is given (``[::1]:5006`` for IPv6)."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):                         # [v6]:port
        name, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        name = f"[{name}]"
    else:
        name, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    return f"{name}:{port or default_port}"


def origin_key(origin: str) -> str | None:
    """The ``name:port`` an Origin header names, or None when it names none (``null``, garbage)."""
    parts = urlsplit(origin.strip())
    if not parts.netloc or parts.scheme not in _DEFAULT_PORTS:
        return None
    return host_key(parts.netloc, _DEFAULT_PORTS[parts.scheme])


class HostGate(httputil.HTTPServerConnectionDelegate):
    """Wraps the Tornado application: a request whose Host or Origin is not in ``allowed`` gets 403."""

    def __init__(self, app: Application, allowed: list[str]):
        self.app, self.allowed = app, {host_key(a) for a in allowed}

    def refusal(self, headers: httputil.HTTPHeaders) -> str | None:
        host = headers.get("Host", "")
        if host_key(host) not in self.allowed:
            return f"Host {host!r}"
        origin = headers.get("Origin")
        if origin is not None and origin_key(origin) not in self.allowed:
            return f"Origin {origin!r}"
        return None

    def start_request(self, server_conn, request_conn):
        return _GatedMessage(self, self.app.start_request(server_conn, request_conn), request_conn)

    def on_close(self, server_conn) -> None:
        self.app.on_close(server_conn)


class _GatedMessage(httputil.HTTPMessageDelegate):
    def __init__(self, gate: HostGate, inner: httputil.HTTPMessageDelegate, conn: httputil.HTTPConnection):
        self.gate, self.inner, self.conn = gate, inner, conn
        self.refused: str | None = None

    def headers_received(self, start_line, headers):
        self.refused = self.gate.refusal(headers)
        if self.refused is None:
            return self.inner.headers_received(start_line, headers)
        log.warning("refused a request with %s (not an allowed address; see --allow-origin)", self.refused)
        return None

    def data_received(self, chunk):
        return None if self.refused else self.inner.data_received(chunk)

    def finish(self) -> None:
        if self.refused is None:
            return self.inner.finish()
        body = (f"403 Forbidden: rnnviz answers only to the addresses it serves; this request's "
                f"{self.refused} is not one of them. Serving it to others: rnnviz serve --help "
                f"(--allow-origin).\n").encode()
        headers = httputil.HTTPHeaders({"Content-Type": "text/plain; charset=utf-8",
                                        "Content-Length": str(len(body)), "Connection": "close"})
        self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", 403, "Forbidden"), headers, body)
        self.conn.finish()

    def on_connection_close(self) -> None:
        if self.refused is None:
            self.inner.on_connection_close()


BUSY_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>rnnviz is busy</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>rnnviz is busy</h1>
<p>This server already serves {n} browser tab(s), the most it keeps at once
(<code>--max-sessions</code>). Close another tab of it, or reload this page in a few
seconds: sessions whose tab has gone are dropped within {drop} s.</p>
</body></html>
"""


class _CappedDocHandler(DocHandler):
    """Bokeh's page handler, answering 503 "busy" instead of building one more document past the cap."""

    def initialize(self, *args, limits: "SessionLimits", **kw):
        self.limits = limits

    def client_gone(self) -> bool:
        """Whether the browser that asked has already closed its end (a FIN waits in the socket).

        Requests queue while a document is built (the build holds the event loop), so after a
        burst many of them belong to clients that gave up; building their documents would keep
        the server busy for nobody.
        """
        stream = getattr(self.request.connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if sock is None:
            return stream is not None and stream.closed()
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False                # open, nothing more sent: the client is waiting
        except OSError:
            return True                 # reset by the peer

    async def get(self, *args, **kwargs):
        limits = self.limits
        if self.client_gone():
            self.request.connection.close()
            return
        open_now = len(self.application_context.sessions) + limits.building
        if open_now >= limits.max_sessions:
            self.set_status(503)
            self.set_header("Retry-After", str(max(1, round(limits.drop_seconds))))
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(BUSY_PAGE.format(n=open_now, drop=limits.drop_seconds))
            return
        limits.building += 1            # a session is stored only once its document is built
        try:
            await super().get(*args, **kwargs)
        finally:
            limits.building -= 1


class SessionLimits:
    def __init__(self, max_sessions: int, drop_seconds: float):
        self.max_sessions, self.drop_seconds = max_sessions, drop_seconds
        self.building = 0


def cap_sessions(tornado_app: Application, max_sessions: int, drop_seconds: float) -> None:
    """Route the app's page through :class:`_CappedDocHandler` (at most ``max_sessions`` open or being built)."""
    limits = SessionLimits(max_sessions, drop_seconds)
    rules = [r for r in tornado_app.wildcard_router.rules if r.target is DocHandler]
    assert rules, "Bokeh's page route moved"
    for rule in rules:
        rule.target = _CappedDocHandler
        rule.target_kwargs = {**rule.target_kwargs, "limits": limits}
