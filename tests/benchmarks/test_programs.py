"""Smoke tests of the other benchmark programs: each runs a few steps at a tiny size."""

import json

import pytest

from benchmarks import seeds, streaming
from flaxae.kernels import native


@pytest.mark.devices(4)
def test_seeds_program(tmp_path, capsys):
  out = tmp_path / "seeds.json"
  result = seeds.main(["--seeds=2", "--batch=8", "--steps=2", "--reps=1", "--cpu-devices=0",
                       f"--out={out}"])
  saved = json.loads(out.read_text())
  rows = saved["rows"]  # The test process has 4 forced devices.
  mkl = {"sequential, 1 device, MKL matmuls", "one program, MKL matmuls"}
  assert set(rows) == {"sequential, 1 device", "sequential, 4 devices",
                       "one program, 1 device", "one program",
                       "sequential, 1 device, Eigen matmuls", "one program, Eigen matmuls",
                       *(mkl if native.available() else ())}
  for row in rows.values():
    assert row["samples_per_s_min"] <= row["samples_per_s_median"] <= row["samples_per_s_max"]
    assert row["compile_s"] > 0
  median = {k: r["samples_per_s_median"] for k, r in rows.items()}
  best = max(median["sequential, 1 device"], median["sequential, 4 devices"])
  assert saved["ratio"] == result["ratio"] == pytest.approx(median["one program"] / best)
  best_seq = max(v for k, v in median.items() if k.startswith("sequential"))
  best_one = max(v for k, v in median.items() if k.startswith("one program"))
  assert saved["best_ratio"] == pytest.approx(best_one / best_seq)
  printed = capsys.readouterr().out
  assert "one program / faster sequential" in printed
  assert "fastest one program / fastest sequential" in printed


def test_streaming_program(tmp_path, capsys):
  out = tmp_path / "streaming.json"
  result = streaming.main(["--examples=1024", "--epochs=2", "--rounds=1", "--batch=64",
                           f"--out={out}"])
  assert set(result["rows"]) == {"resident", "stream"}
  assert all(row["epochs"] == 1 for row in result["rows"].values())  # First one dropped.
  assert json.loads(out.read_text())["ratio"] == result["ratio"] > 0
  assert "stream / resident" in capsys.readouterr().out
