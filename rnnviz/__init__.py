"""rnnviz: record, rank and explore the units of character-level LSTMs."""
__version__ = "0.1.0"
