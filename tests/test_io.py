"""Atomic writes: all or nothing, ordinary permissions, no silent overwrite."""

import stat

import pytest

from flaxae import io
from flaxae.errors import OutputError


def test_written_file_has_the_permissions_of_a_new_file(tmp_path, monkeypatch):
  monkeypatch.setattr(io, "_UMASK", 0o022)  # The process's umask, read at import.
  io.write_text(tmp_path / "a.json", "{}")
  assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "metrics.txt"
  io.write_text(path, "good")
  with pytest.raises(RuntimeError):
    with io.atomic_path(path) as tmp:
      tmp.write_text("half")
      raise RuntimeError("killed mid-write")
  assert path.read_text() == "good"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.txt"]


def test_existing_output_is_refused_unless_overwrite(tmp_path):
  path = tmp_path / "out.bin"
  io.write_bytes(path, b"1")
  with pytest.raises(OutputError, match="exists"):
    io.write_bytes(path, b"2", overwrite=False)
  assert path.read_bytes() == b"1"
  io.write_bytes(path, b"2")
  assert path.read_bytes() == b"2"


def test_missing_folder_is_a_clear_error(tmp_path):
  with pytest.raises(OutputError, match="folder"):
    io.write_text(tmp_path / "nowhere" / "deeper" / "x.txt", "x")


def test_a_folder_is_not_an_output_file(tmp_path):
  with pytest.raises(OutputError, match="is a folder"):
    io.check_output(tmp_path, overwrite=True)
