"""The ``rnnviz serve`` app: explore a dump's units in the browser (a Bokeh server).

    rnnviz.app.serve(["dumps/linux.h5"], port=5006, initial_unit="layer1.c[42]")
"""
from .server import make_server, serve

__all__ = ["serve", "make_server"]
