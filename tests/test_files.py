"""Output files are written all at once, with the permissions ``open`` gives."""

import os

import pytest

from keras_compress.core.files import write_atomically

pytestmark = pytest.mark.backends  # pure Python: runs on JAX and PyTorch too


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_get_the_umask_permissions_not_owner_only(tmp_path, umask_022):
    # mkstemp creates 0o600 files: a model exported in a container was unreadable to the
    # app's user until the permissions came from the umask.
    write_atomically({tmp_path / "m.tflite": b"abc", tmp_path / "deep" / "m.kcz": b"d"})
    assert (tmp_path / "m.tflite").read_bytes() == b"abc"
    for path in (tmp_path / "m.tflite", tmp_path / "deep" / "m.kcz"):
        assert path.stat().st_mode & 0o777 == 0o644


def test_a_failure_leaves_every_target_as_it_was_and_no_temporaries(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    (tmp_path / "blocker").write_bytes(b"a file where a folder would be needed")
    with pytest.raises(OSError):
        write_atomically({tmp_path / "a.bin": b"new", tmp_path / "blocker" / "b.bin": b"x"})
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "blocker"]
