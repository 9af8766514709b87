"""rnnviz dump: the file layout, safe writes, resume and bad input."""
import h5py
import pytest

from rnnviz.dump import open_dump
from rnnviz.errors import RnnvizError


def _fake_dump(path, **attrs):
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "rnnviz-dump", "schema_version": 1, "complete": 1, **attrs})
    return path


def test_open_dump_accepts_a_finished_dump(tmp_path):
    with open_dump(_fake_dump(tmp_path / "ok.h5")) as f:
        assert f.attrs["format"] == "rnnviz-dump"


@pytest.mark.parametrize("attrs, message", [
    ({"format": "something-else"}, "format='something-else'"),
    ({"schema_version": 2}, "schema 2"),
    ({"complete": 0}, "unfinished"),
])
def test_open_dump_refuses_other_files(tmp_path, attrs, message):
    path = _fake_dump(tmp_path / "x.h5", **attrs)
    with pytest.raises(RnnvizError, match="expected an rnnviz dump.*" + message):
        open_dump(path)


def test_open_dump_refuses_non_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    with pytest.raises(RnnvizError, match="expected an rnnviz dump, found a file that is not HDF5"):
        open_dump(path)
