"""rnnviz: record, rank and explore the units of character-level LSTMs."""
__version__ = "0.1.0"


def __getattr__(name):
    # rnnviz.record(lstm, inputs): imported on first use so that `import rnnviz` stays light.
    if name == "record":
        import importlib
        return importlib.import_module(".record", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
