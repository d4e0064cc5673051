import json
import os
import stat

import pytest

from tskd_components.utils.io import atomic_write, new_file_mode, write_json


def test_an_atomic_write_is_readable_like_a_plain_new_file(tmp_path):
    """mkstemp's temporary files are owner-only; the renamed result must not be (a MONAI Label server or a teammate
    reading a run folder is often another user)."""
    (tmp_path / "plain.json").write_text("{}")
    write_json(tmp_path / "atomic.json", {"a": 1})
    with atomic_write(tmp_path / "weights.bin", fsync=True) as tmp:
        tmp.write_bytes(b"\0" * 8)
    plain = stat.S_IMODE(os.stat(tmp_path / "plain.json").st_mode)
    assert plain == new_file_mode()
    for name in ("atomic.json", "weights.bin"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == plain, name


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    write_json(tmp_path / "record.json", {"version": 1})
    with pytest.raises(RuntimeError, match="killed halfway"):
        with atomic_write(tmp_path / "record.json") as tmp:
            tmp.write_text('{"version": 2, "trunc')
            raise RuntimeError("killed halfway")
    assert json.loads((tmp_path / "record.json").read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_new_file_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "record.json", {})
        assert new_file_mode() == 0o666 & ~umask
        assert stat.S_IMODE(os.stat(tmp_path / "record.json").st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)
