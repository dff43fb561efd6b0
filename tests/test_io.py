"""Atomic writes: all or nothing, ordinary permissions, no silent overwrite."""

import json
import math
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


def test_json_is_strict_nan_and_inf_are_null(tmp_path):
  # Python's json writes NaN, which strict readers (jq) refuse: an eval.json
  # of a diverged run, a compression report's SSIM of vectors.
  io.write_json(tmp_path / "a.json", {"loss": float("nan"), "x": [1.0, float("inf")], "n": 3})
  text = (tmp_path / "a.json").read_text()
  assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
      "loss": None, "x": [1.0, None], "n": 3}


def test_metrics_records_write_nan_as_null_and_read_it_back(tmp_path):
  from flaxae.train.logger import MetricsLogger  # pylint: disable=import-outside-toplevel
  logger = MetricsLogger(tmp_path)
  logger.write({"step": 1, "test/loss": float("nan")})
  logger.close()
  line = (tmp_path / "metrics.jsonl").read_text()
  assert json.loads(line, parse_constant=lambda c: pytest.fail(c))["test/loss"] is None
  assert math.isnan(MetricsLogger(tmp_path, enabled=False).history()[0]["test/loss"])
