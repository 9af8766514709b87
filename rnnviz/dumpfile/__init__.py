"""The one owner of the dump file's layout (docs/dump-format.md): no other module touches HDF5.

    with open_dump("dumps/demo.h5") as d: c = d["layer1.c"][:, 17]

``schema`` holds the format constants, the version check and the lock handling;
``writer`` creates and fills a dump; ``reader`` opens a finished one (:class:`Dump`,
what ``rnnviz.open`` returns); ``analysis`` reads and writes /analysis; ``tables``
stores DataFrames. Imports neither torch nor bokeh.
"""
from .analysis import AnalysisGroup, write_analysis
from .reader import Dump, describe_dump, open_dump
from .schema import (CHUNK_ROWS, CHUNK_UNITS, FORMAT, SCHEMA_VERSION, DumpLocked, h5open, header_attrs,
                     open_checked)
from .writer import DumpWriter, SideFile, write_dump

__all__ = ["AnalysisGroup", "CHUNK_ROWS", "CHUNK_UNITS", "Dump", "DumpLocked", "DumpWriter", "FORMAT",
           "SCHEMA_VERSION", "SideFile", "describe_dump", "h5open", "header_attrs", "open_checked", "open_dump", "write_analysis",
           "write_dump"]
