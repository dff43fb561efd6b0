"""Smoke tests of the throughput benchmarks: a few steps at a tiny size.

The benchmarks themselves are not part of the suite; these only check that
each program runs and reports what it should. The peers (PyTorch, Keras) are
not installed in CI, so their test skips there.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from benchmarks import common, conv_layers, flaxae_bench, throughput
from flaxae import benchmark, cli
from flaxae.config import Config, ModelConfig, TrainConfig
from flaxae.kernels import native
from flaxae.models import build_model

ROOT = Path(__file__).resolve().parents[2]


def _check_timing(t):
  assert t["reps"] >= 1
  assert t["min_s"] <= t["median_s"] <= t["max_s"]
  assert t["samples_per_s_min"] <= t["samples_per_s"] <= t["samples_per_s_max"]


def test_flops_of_the_issue_models():
  assert common.model_macs("dense") == 2 * (784 * 256 + 256 * 64)
  # conv_0, conv_1, deconv_0, deconv_1 and the logits conv of 28×28×1.
  assert common.model_macs("conv") == (14 * 14 * 9 * 32 + 7 * 7 * 9 * 32 * 64 +
                                       7 * 7 * 9 * 64 * 64 + 14 * 14 * 9 * 64 * 32 +
                                       28 * 28 * 9 * 32)
  assert common.train_flops_per_sample(10) == 60


def test_dense_macs_match_xla():
  """The counted MACs are XLA's count of a flaxae dense forward pass (plus
  biases and activations)."""
  cfg, shape = ModelConfig(widths=(32, 8)), (8, 8, 1)
  model = build_model(cfg, shape)
  x = np.zeros((1, *shape), np.float32)
  variables = model.init(jax.random.key(0), x)
  flops = jax.jit(model.apply).lower(variables, x).compile().cost_analysis()["flops"]
  macs = flaxae_bench.model_macs(cfg, shape)
  assert macs == 2 * (64 * 32 + 32 * 8)
  assert 2 * macs <= flops <= 2 * macs * 1.05


def test_conv_macs_with_a_dense_code():
  cfg = ModelConfig(arch="conv", channels=(4,), latent_dim=5)
  # conv 6→3, code and grid, deconv 3→6 (input positions), logits conv.
  expected = 9 * 9 * 2 * 4 + 2 * 9 * 4 * 5 + 9 * 9 * 4 * 4 + 36 * 9 * 4 * 2
  assert flaxae_bench.model_macs(cfg, (6, 6, 2)) == expected


def test_flaxae_runner_reports_training_and_inference():
  cfg = flaxae_bench.benchmark_config("dense", batch_size=8)
  cfg = Config(model=ModelConfig(widths=(16, 4)), train=cfg.train)
  rec = flaxae_bench.run(cfg, common.make_images(32, shape=(8, 8, 1)), reps=2)
  assert rec["steps_per_rep"] == 4 and rec["samples_per_rep"] == 32
  _check_timing(rec["train"])
  _check_timing(rec["infer"])
  assert rec["first_call_s"] > 0 and rec["compile_s"] >= 0
  assert np.isfinite(rec["loss"]) and rec["peak_rss_mb"] > 0
  assert rec["macs_per_sample"] == 64 * 16 + 16 * 4 + 4 * 16 + 16 * 64
  json.dumps(rec)


def test_flaxae_runner_on_all_devices():
  cfg = Config(model=ModelConfig(widths=(8, 4)), train=TrainConfig(batch_size=8, num_devices=0))
  rec = flaxae_bench.run(cfg, common.make_images(16, shape=(4, 4, 1)), reps=1,
                         inference=False)
  assert rec["devices"] == jax.device_count()
  assert "infer" not in rec and np.isfinite(rec["loss"])


def test_report_ratios_table_and_acceptance():
  def rec(impl, arch, sps, compile_s=1.0):
    t = common.summarize([1.0 / sps] * 5, 1)
    return {"impl": impl, "arch": arch, "batch_size": 256, "devices": 1, "train": t,
            "compile_s": compile_s, "peak_rss_mb": 100.0, "loss": 0.69}

  results = [rec("flaxae", "dense", 60_000), rec("pytorch", "dense", 30_000),
             rec("keras-tf", "dense", 30_000), rec("flaxae", "conv", 1_000),
             rec("pytorch", "conv", 2_000),
             {"impl": "torch.compile", "arch": "conv", "batch_size": 256, "error": "boom"}]
  throughput.add_ratios(results, peak_gflops=200.0)
  assert results[0]["ratio_to_pytorch"] == pytest.approx(2.0)
  flops = common.train_flops_per_sample(common.model_macs("dense"))
  assert results[0]["roofline_pct"] == pytest.approx(100 * 60_000 * flops / 200e9)
  table = throughput.markdown_table(results)
  assert table.count("\n") == len(results) + 1 and "failed: boom" in table
  checks = {c["figure"]: c for c in throughput.acceptance(results)}
  assert checks["dense b256: flaxae / pytorch"]["holds"]
  assert not checks["dense b256: flaxae / keras-tf"]["holds"]  # 2.0 < 2.5.
  assert checks["conv b256: flaxae / pytorch"]["value"] == pytest.approx(0.5)
  assert checks["dense b256: flaxae fused-epoch compile s"]["holds"]


def test_rounds_pair_each_ratio_within_its_round():
  def rec(impl, sps, reps=(1.0,)):
    t = common.summarize([1.0 / sps * r for r in reps], 1)
    return {"impl": impl, "arch": "dense", "batch_size": 256, "devices": 1, "train": t,
            "compile_s": 1.0, "peak_rss_mb": 100.0, "loss": 0.69, "all_devices": False}

  # The machine slows by half in round 2 and recovers in round 3: each round's
  # ratio is 1.5, while the medians of the rows (90k against 40k) would say 2.25.
  failed = {"impl": "keras-tf", "arch": "dense", "batch_size": 256, "error": "boom"}
  rounds = [
      {"peak": {"peak_gflops": 400.0}, "results": [rec("flaxae-mkl", 90_000, (0.9, 1.0, 1.1)),
                                                   rec("pytorch", 60_000)]},
      {"peak": {"peak_gflops": 200.0}, "results": [rec("flaxae-mkl", 45_000),
                                                   rec("pytorch", 30_000)]},
      {"peak": {"peak_gflops": 300.0}, "results": [rec("flaxae-mkl", 60_000),
                                                   rec("pytorch", 40_000), failed]},
  ]
  rows = throughput.combine_rounds(rounds)
  assert [r["impl"] for r in rows] == ["flaxae-mkl", "pytorch"]  # Round 1's jobs.
  mkl, torch_row = rows
  assert mkl["rounds"] == pytest.approx([90_000, 45_000, 60_000])
  assert mkl["round_peaks"] == [400.0, 200.0, 300.0]
  assert mkl["train"]["samples_per_s"] == pytest.approx(60_000)  # The median round's record.
  assert mkl["train"]["samples_per_s_max"] == pytest.approx(100_000)  # Over every round.
  assert mkl["train"]["samples_per_s_min"] == pytest.approx(45_000)
  throughput.add_ratios(rows, peak_gflops=300.0)
  assert mkl["round_ratios"] == pytest.approx([1.5, 1.5, 1.5])
  assert mkl["ratio_to_pytorch"] == pytest.approx(1.5)
  flops = common.train_flops_per_sample(common.model_macs("dense"))
  pcts = [100 * s * flops / 1e9 / p for s, p in [(90_000, 400), (45_000, 200), (60_000, 300)]]
  assert mkl["round_roofline_pcts"] == pytest.approx(pcts)
  assert mkl["roofline_pct"] == pytest.approx(sorted(pcts)[1])
  check = {c["figure"]: c for c in throughput.acceptance(rows)}["dense b256: flaxae-mkl / pytorch"]
  assert check["value"] == pytest.approx(1.5) and check["holds"]
  assert check["rounds"] == pytest.approx([1.5, 1.5, 1.5])
  # A job that failed in every round keeps its error.
  assert throughput.combine_rounds([{"peak": {"peak_gflops": 1.0}, "results": [failed]}] * 2
                                   ) == [failed]


def test_slow_jobs_get_fewer_examples_or_are_skipped():
  done = [{"impl": "keras-jax", "arch": "conv", "batch_size": 64, "all_devices": False,
           "train": {"samples_per_s": 100.0}}]
  # 6 runs of 2048 examples at 100/s: 123 s, within a 150 s budget.
  assert throughput.plan_samples(done, "keras-jax", "conv", 256, 2048, 5, 150) == (2048, None)
  assert throughput.plan_samples(done, "keras-jax", "conv", 256, 2048, 5, 60) == (768, None)
  samples, skip = throughput.plan_samples(done, "keras-jax", "conv", 4096, 2048, 5, 60)
  assert samples == 4096 and skip.startswith("skipped")
  # An earlier round's figure at the same batch size comes first: 1000/s at 256.
  again = [*done, {**done[0], "batch_size": 256, "train": {"samples_per_s": 1000.0}},
           {**done[0], "batch_size": 4096}]
  assert throughput.plan_samples(again, "keras-jax", "conv", 256, 2048, 5, 60) == (2048, None)
  # No earlier figure for this implementation (or for flaxae on all devices).
  assert throughput.plan_samples(done, "flaxae-all", "conv", 256, 2048, 5, 1) == (2048, None)


def test_output_side_conv_equals_flax_conv():
  x = np.random.default_rng(0).random((2, 9, 7, 5), dtype=np.float32)
  layer = conv_layers.OutputSideConv(3)
  params = layer.init(jax.random.key(0), x)
  np.testing.assert_allclose(layer.apply(params, x), nn.Conv(3, (3, 3)).apply(params, x),
                             atol=1e-5)


def _env():
  return {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}


@pytest.mark.parametrize("dtype,rounds", [("float32", 2), ("bfloat16", 1)])
def test_throughput_program_end_to_end(tmp_path, dtype, rounds):
  out = tmp_path / "t.json"
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.throughput", "--models", "dense",
       "--impls", "flaxae", "--batch-sizes", "16", "--samples", "64", "--reps", "1",
       "--matmul-size", "256", "--dtype", dtype, "--rounds", str(rounds), "--out", str(out)],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert "| dense | 16 | flaxae | 1 |" in proc.stdout
  assert f"Matmul peak (256² {dtype}" in proc.stdout
  report = json.loads(out.read_text())
  assert report["meta"]["dtype"] == report["peak"]["dtype"] == dtype
  assert report["peak"]["peak_gflops"] > 0
  # NumPy's BLAS has no bfloat16: its figure is the float32 ceiling's alone.
  assert (report["peak"]["numpy_gflops"] is None) == (dtype == "bfloat16")
  # flaxae's MKL kernel too, where it can be built: float32 only.
  has_mkl = dtype == "float32" and native.available()
  assert (report["peak"]["mkl_gflops"] is not None) == has_mkl
  assert report["peak"]["peak_gflops"] == max(
      v or 0.0 for k, v in report["peak"].items() if k.endswith("_gflops") and k != "peak_gflops")
  assert ("MKL (flaxae's kernel)" in proc.stdout) == has_mkl
  (row,) = report["results"]
  assert row["dtype"] == dtype and row["precision"] == "float32"
  assert row["roofline_pct"] > 0 and row["ratio_to_pytorch"] is None
  assert report["meta"]["rounds"] == rounds
  assert len(row.get("rounds", [None])) == rounds  # Each round's figure, when several.


def test_matmul_precision_is_checked_and_set_on_accelerators_only():
  with pytest.raises(ValueError, match="precision must be one of"):
    benchmark.set_matmul_precision("float16")
  before = jax.config.jax_default_matmul_precision
  try:
    benchmark.set_matmul_precision("tf32")
    if jax.default_backend() == "cpu":  # CPUs compute float32 either way.
      assert jax.config.jax_default_matmul_precision == before
    else:
      assert jax.config.jax_default_matmul_precision == "tensorfloat32"
  finally:
    jax.config.update("jax_default_matmul_precision", before)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_peer_subprocess(dtype):
  pytest.importorskip("torch")
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.peer_torch", "--model", "dense", "--batch-size",
       "8", "--samples", "16", "--reps", "1", "--dtype", dtype], cwd=ROOT, env=_env(),
      capture_output=True, text=True, timeout=120, check=False)
  (rec,) = common.parse_records(proc.stdout)
  assert "error" not in rec, rec
  assert rec["impl"] == "pytorch" and np.isfinite(rec["loss"])
  assert rec["dtype"] == dtype and rec["platform"] == "cpu"
  _check_timing(rec["train"])


def test_cli_bench(tmp_path, capsys):
  out = tmp_path / "b.json"
  status = cli.main(["bench", "--model.widths=16,4", "--batch_sizes=16", "--samples=32",
                     "--reps=1", f"--json_out={out}"])
  assert status == 0
  assert f"| 16 | {jax.device_count()} |" in capsys.readouterr().out
  assert [r["batch_size"] for r in json.loads(out.read_text())["results"]] == [16]
  # An existing file is replaced only with --overwrite, and refused before any
  # timing; bad counts are one-line errors; true/false options read as train's.
  before = out.read_bytes()
  for argv, message in [([f"--json_out={out}"], "exists"), (["--reps=0"], "reps must be"),
                        (["--batch_sizes=0"], "batch sizes must be positive")]:
    assert cli.main(["bench", "--model.widths=16,4", "--samples=32", *argv]) == 2
    assert message in capsys.readouterr().err
  assert out.read_bytes() == before
  assert cli.main(["bench", "--model.widths=16,4", "--batch_sizes=16", "--samples=32",
                   "--reps=1", "--data.binarize=True", f"--json_out={out}",
                   "--overwrite"]) == 0
  assert json.loads(out.read_text())["config"]["data"]["binarize"] is True


@pytest.mark.devices(2)
def test_cli_bench_checks_every_batch_size_before_timing(tmp_path, capsys, monkeypatch):
  # Batch 16 was timed, then batch 7 refused (not split over the devices) and
  # batch 16's figures lost; micro-batches were checked against the unused
  # train.batch_size; a --samples beyond memory ended in a MemoryError.
  timed = []
  monkeypatch.setattr(benchmark, "run", lambda *a, **k: timed.append(a) or {})
  for argv, message in [
      (["--batch_sizes=16,7"], "batch size 7 is not divisible by the number of devices"),
      (["--samples=10000000000"], "lower --samples"),
      (["--batch_sizes=16,12", "--train.micro_batch_size=8"],
       "micro_batch_size=8 must divide train.batch_size=12")]:
    assert cli.main(["bench", "--model.widths=16,4", "--reps=1", *argv]) == 2
    assert message in capsys.readouterr().err
  assert not timed
  monkeypatch.undo()
  assert cli.main(["bench", "--model.widths=16,4", "--batch_sizes=8", "--samples=16",
                   "--reps=1", "--train.micro_batch_size=4", "--train.num_seeds=2"]) == 0
  assert "2 models at once" in capsys.readouterr().out


def test_cli_bench_many_seeds_counts_every_model(tmp_path):
  out = tmp_path / "b.json"
  status = cli.main(["bench", "--model.widths=16,4", "--batch_sizes=16", "--samples=32",
                     "--reps=1", "--train.num_seeds=4", f"--json_out={out}"])
  assert status == 0
  (rec,) = json.loads(out.read_text())["results"]
  assert rec["num_seeds"] == 4
  train = rec["train"]  # Throughput summed over the 4 models.
  assert train["samples_per_s"] * train["median_s"] == pytest.approx(4 * rec["samples_per_rep"])
  assert rec["infer"]["samples_per_s"] > 0


def test_cli_bench_needs_no_source_checkout(tmp_path):
  # Run where ``benchmarks/`` cannot be imported: the measurement is the library's.
  code = ("import sys; from flaxae import cli; "
          "s = cli.main(['bench', '--model.widths=8,4', '--batch_sizes=8', '--samples=16', "
          "'--reps=1']); assert s == 0, s; "
          "assert not [m for m in sys.modules if m.startswith('benchmarks')]")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      p for p in sys.path if p and Path(p).resolve() != ROOT)}
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| 8 |" in out.stdout


def test_xla_conv_rows_are_asked_for_by_name_and_only_for_the_conv_model():
  assert "flaxae-xla-conv" not in throughput.parse_args([]).impls
  args = throughput.parse_args(["--impls", "flaxae,flaxae-xla-conv", "--batch-sizes", "64"])
  jobs = list(throughput._jobs(args, 1, "cpu"))  # pylint: disable=protected-access
  assert [(m, impl) for m, _, impl, *_ in jobs] == [
      ("dense", "flaxae"), ("conv", "flaxae"), ("conv", "flaxae-xla-conv")]
  argv = jobs[-1][4]
  assert argv[argv.index("--conv-impl") + 1] == "xla"


def test_mkl_rows_run_on_cpu_only_and_the_faster_flaxae_row_is_judged():
  args = throughput.parse_args(["--impls", "flaxae,flaxae-mkl", "--batch-sizes", "256"])
  jobs = list(throughput._jobs(args, 1, "cpu"))  # pylint: disable=protected-access
  assert [(m, impl) for m, _, impl, *_ in jobs] == [
      ("dense", "flaxae"), ("dense", "flaxae-mkl"), ("conv", "flaxae"), ("conv", "flaxae-mkl")]
  argv = jobs[1][4]
  assert argv[argv.index("--cpu-matmuls") + 1] == "mkl"
  assert [impl for _, _, impl, *_ in throughput._jobs(args, 1, "gpu")] == [  # pylint: disable=protected-access
      "flaxae", "flaxae"]
  # Every device (one per core), with and without MKL: shard_map, on CPU only for MKL.
  args = throughput.parse_args(["--impls", "flaxae-all,flaxae-all-mkl", "--batch-sizes", "256",
                                "--models", "conv"])
  jobs = list(throughput._jobs(args, 2, "cpu"))  # pylint: disable=protected-access
  assert [impl for _, _, impl, *_ in jobs] == ["flaxae-all", "flaxae-all-mkl"]
  assert "--cpu-matmuls" not in jobs[0][4] and jobs[1][4][-2:] == ["--cpu-matmuls", "mkl"]
  assert jobs[1][5]["XLA_FLAGS"].endswith("--xla_force_host_platform_device_count=2")
  assert [impl for _, _, impl, *_ in throughput._jobs(args, 2, "gpu")] == ["flaxae-all"]  # pylint: disable=protected-access

  def rec(impl, arch, sps):
    return {"impl": impl, "arch": arch, "batch_size": 256, "all_devices": False,
            "train": {"samples_per_s": sps}, "roofline_pct": sps / 1000, "compile_s": 0.5}

  results = [rec("flaxae", "dense", 80_000), rec("flaxae-mkl", "dense", 96_000),
             rec("pytorch", "dense", 64_000), rec("keras-tf", "dense", 32_000),
             rec("flaxae", "conv", 3_000), rec("flaxae-mkl", "conv", 2_900),
             rec("pytorch", "conv", 2_000)]
  checks = {c["figure"]: c for c in throughput.acceptance(results)}
  assert checks["dense b256: flaxae-mkl / pytorch"]["value"] == 1.5
  assert checks["dense b256: flaxae-mkl / keras-tf"]["holds"]
  assert checks["dense b256: flaxae-mkl % of matmul roofline"]["value"] == 96
  assert checks["conv b256: flaxae / pytorch"]["value"] == 1.5
