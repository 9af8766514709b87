"""The one exception type for problems a user can fix (bad file, bad option)."""


class RnnvizError(Exception):
    """Expected failure with a message a user can act on; the CLI prints it on one line."""
