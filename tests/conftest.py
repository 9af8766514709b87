import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/dumpfactory.py


@pytest.fixture(scope="session")
def stdlib_text_file():
    """A real Python source file every install has."""
    import textwrap
    return Path(textwrap.__file__)
