"""Smoke tests of the other benchmark programs: each runs a few steps at a tiny size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import breakdown, conv_layers, roofline, seeds, streaming, throughput
from flaxae.kernels import native

ROOT = Path(__file__).resolve().parents[2]


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


# --- Arguments: checked before anything is measured -------------------------------


@pytest.mark.parametrize("program,argv,message", [
    (throughput, ["--models=foo"], "unknown 'foo'; known: dense, conv"),
    (throughput, ["--impls=flaxae,bogus"], "unknown 'bogus'"),
    (throughput, ["--batch-sizes=64,0"], "--batch-sizes: must be at least 1, got 0"),
    (throughput, ["--reps=0"], "--reps: must be at least 1"),
    (throughput, ["--budget=-1"], "--budget: must be a finite number above 0"),
    (throughput, ["--out=/proc/nope/t.json"], "cannot create folder /proc/nope"),
    (seeds, ["--seeds=0"], "--seeds: must be at least 1"),
    (seeds, ["--batch=x"], "--batch: 'x' is not an integer"),
    (streaming, ["--epochs=1"], "--epochs must be at least 2"),
    (streaming, ["--batch=512", "--examples=256"], "larger than --examples"),
    (breakdown, ["--variants=9"], "no variant 9; they are 0 to 6"),
    (breakdown, ["--model=conv", "--variants=1"], "the conv AE has no flattened variant"),
    (roofline, ["--repeats=0"], "--repeats: must be at least 1"),
    (conv_layers, ["--reps=-2"], "--reps: must be at least 1"),
])
def test_bad_arguments_exit_2_with_the_reason(program, argv, message, capsys):
  parse = getattr(program, "parse_args", program.main)
  with pytest.raises(SystemExit) as exit_:
    parse(argv)
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_an_output_is_checked_before_the_run_and_quick_runs_keep_their_own_file(tmp_path):
  (tmp_path / "dir.json").mkdir()
  with pytest.raises(SystemExit):
    throughput.parse_args([f"--out={tmp_path / 'dir.json'}"])
  assert throughput.parse_args(["--quick"]).out == "benchmarks/out/throughput-quick.json"
  assert throughput.parse_args([]).out == "benchmarks/out/throughput.json"


def test_breakdown_always_times_and_profiles_the_library_step_first():
  library, *_ = breakdown.VARIANTS
  assert breakdown.variant_names("dense", [2, 6, 2]) == [
      library, list(breakdown.VARIANTS)[2], list(breakdown.VARIANTS)[6],
      breakdown.MATMULS_ONLY]
  assert breakdown.variant_names("conv", [0, 3])[0] == library
  assert all(not breakdown.VARIANTS[n][1] for n in breakdown.variant_names("conv", []))
  # The products the dense AE computes per sample: all but the data's gradient.
  assert breakdown.ACTUAL_DENSE_FLOPS == 2 * (3 * 434_176 - 784 * 256)


def test_threads_confine_every_benchmark_process():
  code = ("import os; from benchmarks import common; "
          "common.peer_args(['--threads=1']); print(len(os.sched_getaffinity(0)))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                        text=True, timeout=60, check=True)
  assert proc.stdout.strip() == "1"
