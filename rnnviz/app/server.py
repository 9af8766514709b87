"""Start the Bokeh server in-process for one or more dumps.

The page loads BokehJS from this server (never a CDN), so it works offline. It binds
127.0.0.1 unless told otherwise and answers only to the names it serves under
(``localhost``, ``127.0.0.1`` and those given with ``--allow-origin``): see guard.py.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys
import webbrowser
from functools import partial

from bokeh.application import Application
from bokeh.application.handlers import FunctionHandler
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from bokeh.server.util import bind_sockets
from bokeh.settings import settings
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from ..errors import RnnvizError
from ..options import ServerOptions
from .document import make_doc
from .guard import HostGate, cap_sessions, host_key
from .store import open_view

log = logging.getLogger(__name__)

DEFAULT_PORT = ServerOptions.port             # the defaults of `rnnviz serve` (rnnviz.options)
MAX_SESSIONS = ServerOptions.max_sessions
UNUSED_SESSION_MS = 3000        # a page whose websocket never connects (or has closed) is dropped after this
CHECK_UNUSED_MS = 500


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, port: int, allow_origins=()) -> None:
    """Refuse a non-loopback ``host`` unless the names others will use are given."""
    if not is_loopback(host) and not allow_origins:
        raise RnnvizError(f"--host {host} lets anyone who can reach the port read the text: pass "
                          f"--allow-origin with the name others will browse to (e.g. "
                          f"--allow-origin {socket.gethostname()}:{port or DEFAULT_PORT})")
    allowed_hosts(host, port, allow_origins)


def allowed_hosts(host: str, port: int, allow_origins=()) -> list[str]:
    """The ``name:port`` values the Host header (and a websocket's Origin) may carry.

    The loopback names of ``port``, and each of ``allow_origins`` (``NAME`` or ``NAME:PORT``;
    without a port, the one served).
    """
    names = ["localhost", "127.0.0.1"]
    bound = host.strip("[]")
    if bound in ("localhost", "::1"):
        names.append("[::1]")
    elif is_loopback(bound) and bound not in names:      # 127.0.0.2 and the like
        names.append(bound)
    allowed = [f"{n}:{port}" for n in names]
    for origin in allow_origins:
        origin = origin.strip()
        if "://" in origin or "/" in origin or not origin:
            raise RnnvizError(f"--allow-origin expects NAME or NAME:PORT (as in the address bar, without "
                              f"http://), found {origin!r}")
        allowed.append(host_key(origin, default_port=port))
    return allowed


def make_server(paths, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                initial_unit: str | None = None, initial_feature: str | None = None,
                allow_origins=(), max_sessions: int = MAX_SESSIONS) -> BaseServer:
    """A started-but-not-running Bokeh server for ``paths``; every dump is checked first.

    It answers only requests whose Host (and Origin, if any) is a loopback name or one of
    ``allow_origins``, and builds at most ``max_sessions`` documents at once.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise RnnvizError("give at least one dump file")
    check_host(host, port, allow_origins)
    if max_sessions < 1:
        raise RnnvizError(f"--max-sessions must be at least 1, found {max_sessions}")
    views = [open_view(p) for p in paths]
    if initial_unit:
        views[0].check_unit(initial_unit)
    settings.resources.set_value("server")      # BokehJS from this server, even if BOKEH_RESOURCES says cdn
    try:
        sockets, port = bind_sockets(host, port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise RnnvizError(f"port {port} on {host} is already in use: pass --port with another "
                              f"number (or --port 0 for any free port)") from None
        if e.errno == errno.EACCES:
            raise RnnvizError(f"not allowed to listen on port {port}: pick a port above 1023") from None
        raise RnnvizError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        allowed = allowed_hosts(host, port, allow_origins)
        app = Application(FunctionHandler(partial(make_doc, paths=paths, initial_unit=initial_unit,
                                                   initial_feature=initial_feature)))
        tornado_app = BokehTornado({"/": app}, extra_websocket_origins=allowed,
                                   absolute_url=f"http://{allowed[1]}/",
                                   unused_session_lifetime_milliseconds=UNUSED_SESSION_MS,
                                   check_unused_sessions_milliseconds=CHECK_UNUSED_MS)
        cap_sessions(tornado_app, max_sessions, drop_seconds=(UNUSED_SESSION_MS + CHECK_UNUSED_MS) / 1000)
        http = HTTPServer(HostGate(tornado_app, allowed))
        http.add_sockets(sockets)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return BaseServer(IOLoop.current(), tornado_app, http)


def url_of(server: BaseServer, host: str, allow_origins=()) -> str:
    """The address to open: a loopback one, or the first name others were allowed to use."""
    if not is_loopback(host):
        return f"http://{host_key(allow_origins[0], default_port=server.port)}/"
    bound = host.strip("[]")
    name = "[::1]" if bound == "::1" else "127.0.0.1" if bound == "localhost" else bound
    return f"http://{name}:{server.port}/"


def serve(paths, port: int = DEFAULT_PORT, host: str = "127.0.0.1", open_browser: bool = True,
          initial_unit: str | None = None, initial_feature: str | None = None,
          allow_origins=(), max_sessions: int = MAX_SESSIONS) -> None:
    """Serve the app for ``paths`` until Ctrl-C; open a browser tab unless ``open_browser`` is False."""
    server = make_server(paths, port=port, host=host, initial_unit=initial_unit, initial_feature=initial_feature,
                         allow_origins=allow_origins, max_sessions=max_sessions)
    if not is_loopback(host):
        log.warning(f"listening on {host}:{server.port} with no password: anyone who can "
                    f"reach this port reads the text of {', '.join(map(str, paths))}")
    url = url_of(server, host, allow_origins)
    log.info(f"rnnviz: serving {', '.join(map(str, paths))} at {url}  (Ctrl-C stops)")
    if open_browser:
        server.io_loop.add_callback(webbrowser.open_new_tab, url)
    try:
        server.run_until_shutdown()
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
