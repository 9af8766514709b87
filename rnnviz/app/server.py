"""Start the Bokeh server in-process for one or more dumps.

The page loads BokehJS from this server (never a CDN), so it works offline; it
binds 127.0.0.1 unless told otherwise and accepts the websocket whether the page
was opened as localhost or 127.0.0.1.
"""
from __future__ import annotations

import errno
import logging
import socket
import sys
import webbrowser
from functools import partial

from bokeh.application import Application
from bokeh.application.handlers import FunctionHandler
from bokeh.server.server import Server
from bokeh.settings import settings

from ..errors import RnnvizError
from .document import make_doc
from .store import open_view

log = logging.getLogger(__name__)

DEFAULT_PORT = 5006


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _origins(host: str, port: int) -> list[str]:
    names = {"localhost", "127.0.0.1", host}
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname(), socket.getfqdn()}
    return sorted(f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names if n)


def make_server(paths, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                initial_unit: str | None = None, initial_feature: str | None = None,
                **server_kwargs) -> Server:
    """A started-but-not-running Bokeh ``Server`` for ``paths``; every dump is checked first."""
    paths = [str(p) for p in paths]
    if not paths:
        raise RnnvizError("give at least one dump file")
    views = [open_view(p) for p in paths]
    if initial_unit:
        views[0].check_unit(initial_unit)
    settings.resources.set_value("server")      # BokehJS from this server, even if BOKEH_RESOURCES says cdn
    try:
        port = _free_port(host) if port == 0 else port
        app = Application(FunctionHandler(partial(make_doc, paths=paths, initial_unit=initial_unit,
                                                   initial_feature=initial_feature)))
        return Server({"/": app}, port=port, address=host, allow_websocket_origin=_origins(host, port),
                      num_procs=1, **server_kwargs)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise RnnvizError(f"port {port} on {host} is already in use: pass --port with another "
                              f"number (or --port 0 for any free port)") from None
        if e.errno == errno.EACCES:
            raise RnnvizError(f"not allowed to listen on port {port}: pick a port above 1023") from None
        raise RnnvizError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def url_of(server: Server, host: str) -> str:
    shown = "127.0.0.1" if host in ("127.0.0.1", "localhost") else (
        socket.gethostname() if host in ("0.0.0.0", "::", "") else host)
    return f"http://{shown}:{server.port}/"


def serve(paths, port: int = DEFAULT_PORT, host: str = "127.0.0.1", open_browser: bool = True,
          initial_unit: str | None = None, initial_feature: str | None = None) -> None:
    """Serve the app for ``paths`` until Ctrl-C; open a browser tab unless ``open_browser`` is False."""
    server = make_server(paths, port=port, host=host, initial_unit=initial_unit, initial_feature=initial_feature)
    url = url_of(server, host)
    log.info(f"rnnviz: serving {', '.join(map(str, paths))} at {url}  (Ctrl-C stops)")
    if open_browser:
        server.io_loop.add_callback(webbrowser.open_new_tab, url)
    try:
        server.run_until_shutdown()
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
