"""Colouring and laying out text by a unit's values: shared by the app, the static export and
``rnnviz.open(...).show``. Imports neither bokeh nor torch."""
