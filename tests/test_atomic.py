"""Files are renamed into place only once written whole."""

import pytest

from nsdbench.atomic import replaced_when_done


def test_a_finished_write_replaces_the_file_and_a_failed_one_leaves_it(tmp_path):
    path = tmp_path / "sub" / "table.parquet"
    with replaced_when_done(path) as partial:
        assert partial.parent == path.parent and partial.suffix == ".parquet"
        assert partial.name.startswith(".") and not path.exists()
        partial.write_text("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError), replaced_when_done(path) as partial:
        partial.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.parquet"]
