import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/dumpfactory.py


@pytest.fixture(scope="session", autouse=True)
def recording_kernel():
    """Built once up front, so that every test records as a user's machine does once it
    has the kernel ("auto" uses a built one); tests of the fallback turn it off."""
    from rnnviz.kernel import load_kernel
    return load_kernel(build=True)


@pytest.fixture(scope="session")
def stdlib_text_file():
    """A real Python source file every install has."""
    import textwrap
    return Path(textwrap.__file__)
