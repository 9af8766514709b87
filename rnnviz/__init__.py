"""rnnviz: record, rank and explore the units of character-level LSTMs.

    with rnnviz.open("dumps/demo.h5") as d: d.show("layer2.c[76]", 0, 2000)
"""
__version__ = "0.1.0"


def open(path, mode: str = "r"):
    """Open a dump (``mode="r+"`` to write /analysis): a :class:`rnnviz.dumpfile.Dump`, used
    as a context manager. Imports neither torch nor bokeh."""
    from .dumpfile import open_dump
    return open_dump(path, mode)


def __getattr__(name):
    # rnnviz.record(lstm, inputs): imported on first use so that `import rnnviz` stays light.
    if name == "record":
        from .recording import record
        return record
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
