"""Training and inference throughput: flaxae, PyTorch and Keras 3 in one run.

    python -m benchmarks.throughput [--batch-sizes 64,256,1024,4096] [--quick]

Every implementation runs in its own subprocess (one per model, batch size and
implementation, interleaved so that a busy machine slows them alike), with the
same model, data (random bytes scaled to [0, 1], fixed seed), loss (BCE from
logits), optimizer (Adam 1e-3, eps 1e-8) and batch size, and the same thread
count. A subprocess that fails (a peer not installed, ``torch.compile``
without a compiler) is reported, not fatal. Prints a markdown table and the
issue's acceptance figures, and writes a JSON file with ratios to PyTorch
eager and the roofline percentage of each row.

``--rounds R`` runs the whole sequence (the matmul peak, then every job) R
times over. A row then reports the round whose median is the median of the
rounds', its ratio to PyTorch is the median of the R ratios each taken within
one round (both sides measured minutes apart), and its
roofline percentage the median of each round's against that round's peak: a
machine whose speed drifts between rounds moves both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from flaxae import io

PEERS = {  # Name → (module, extra arguments, the package it needs).
    "pytorch": ("benchmarks.peer_torch", [], "torch"),
    "torch.compile": ("benchmarks.peer_torch", ["--compile"], "torch"),
    # CUDA graphs (`mode="reduce-overhead"`): the launch-free PyTorch, on GPUs only.
    "torch.compile-graphs": ("benchmarks.peer_torch",
                             ["--compile", "--compile-mode", "reduce-overhead"], "torch"),
    "keras-tf": ("benchmarks.peer_keras", ["--backend", "tensorflow"], "tensorflow"),
    "keras-jax": ("benchmarks.peer_keras", ["--backend", "jax"], "keras"),
}
# Rows run only when asked for by name (--impls), both meant for GPUs: flaxae's conv
# AE with lax convolutions (train.conv_impl=xla) instead of its matmul forms, where
# cuDNN runs them (XLA:CPU runs their gradients as slow loops), and PyTorch with CUDA
# graphs (on a CPU the same as torch.compile).
OPTIONAL_IMPLS = ("flaxae-xla-conv", "torch.compile-graphs")
IMPLS = ("flaxae", "flaxae-mkl", "flaxae-all", "flaxae-all-mkl",
         *(p for p in PEERS if p not in OPTIONAL_IMPLS))
# flaxae's own rows on one device: XLA's products, and (on CPU) MKL's
# (train.cpu_matmuls=mkl: every layer's products in flaxae's FFI kernel).
FLAXAE_ONE_DEVICE = ("flaxae", "flaxae-mkl")
# The same on every device (one per core on CPU): job name → the row's impl.
ALL_DEVICES = {"flaxae-all": "flaxae", "flaxae-all-mkl": "flaxae-mkl"}
BASELINE = "pytorch"
# Examples per timed repetition (one epoch); the conv AE is ~15× the FLOPs.
DEFAULT_SAMPLES = {"dense": 16384, "conv": 2048}
# XLA's CPU convolutions run transposed-conv gradients as slow loops (seconds
# per step at batch 256, see benchmarks/conv_layers.py): fewer examples there.
SLOW_SAMPLES = {("keras-jax", "conv"): 256}


def cpu_model() -> str:
  """The CPU's model name, as lscpu shows it."""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def git_state() -> str:
  """The commit of this checkout, with ``+dirty`` when flaxae/ has changes."""
  root = Path(__file__).resolve().parents[1]
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                            capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "flaxae"], cwd=root, text=True,
                           capture_output=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return commit + ("+dirty" if dirty else "")


def run_process(module: str, args: list[str], *, env: dict[str, str],
                timeout: float) -> list[dict[str, Any]]:
  """Runs ``python -m module args`` and returns its result lines (or an error)."""
  cmd = [sys.executable, "-m", module, *args]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                         cwd=Path(__file__).resolve().parents[1], check=False)
  except subprocess.TimeoutExpired:
    return [{"error": f"timed out after {timeout:.0f} s"}]
  records = common.parse_records(out.stdout)
  if not records:
    tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
    records = [{"error": f"exit status {out.returncode}: {tail[0][:300]}"}]
  return records


def _jobs(args, devices_all: int, platform_: str):
  """(model, batch size, impl, module, argv less --samples, extra env), interleaved."""
  for model in args.models:
    for bs in args.batch_sizes:
      common_args = ["--model", model, "--batch-size", str(bs), "--reps", str(args.reps),
                     "--seed", str(args.seed), "--threads", str(args.threads),
                     "--dtype", args.dtype, "--precision", args.precision]
      for impl in args.impls:
        if impl == "flaxae":
          yield model, bs, impl, "benchmarks.flaxae_bench", [*common_args, "--devices", "1"], {}
        elif impl == "flaxae-mkl":
          if platform_ == "cpu":
            yield model, bs, impl, "benchmarks.flaxae_bench", [
                *common_args, "--devices", "1", "--cpu-matmuls", "mkl"], {}
        elif impl == "flaxae-xla-conv":
          if model == "conv":
            yield model, bs, impl, "benchmarks.flaxae_bench", [
                *common_args, "--devices", "1", "--conv-impl", "xla"], {}
        elif impl in ALL_DEVICES:
          if devices_all <= 1 or bs % devices_all:
            continue
          mkl = ALL_DEVICES[impl] == "flaxae-mkl"
          if mkl and platform_ != "cpu":
            continue
          env = {}
          if platform_ == "cpu":  # One XLA CPU device per core.
            env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                f" --xla_force_host_platform_device_count={devices_all}")
          # The per-device (pmap-style) strategy: one all-reduce per step, the
          # faster of flaxae's two on CPU devices (dense 70k against 55k, conv
          # 3.9k against 3.4k samples/s at batch 256 on 2 cores).
          yield model, bs, impl, "benchmarks.flaxae_bench", [
              *common_args, "--devices", "0", "--strategy", "shard_map",
              *(["--cpu-matmuls", "mkl"] if mkl else [])], env
        else:
          module, extra, _ = PEERS[impl]
          yield model, bs, impl, module, [*common_args, *extra], {}


def plan_samples(results: list[dict[str, Any]], impl: str, model: str, bs: int,
                 samples: int, reps: int, budget_s: float) -> tuple[int, str | None]:
  """Examples per repetition for one job, and a reason to skip it (or None).

  An implementation's throughput at this batch size in an earlier round, else
  at the previous batch size, predicts this job's time; a job predicted to
  take longer than ``budget_s`` gets fewer
  examples per repetition (at least one batch), or is skipped when even one
  batch per repetition would take over twice the budget.
  """
  samples = max(samples, bs)
  name, all_devices = (ALL_DEVICES[impl], True) if impl in ALL_DEVICES else (impl, False)
  prev = [r for r in results if r.get("impl") == name and r.get("arch") == model
          and r.get("all_devices", False) == all_devices and "train" in r]
  if not prev:
    return samples, None
  same = [r for r in prev if r.get("batch_size") == bs]
  sps = (same or prev)[-1]["train"]["samples_per_s"]
  runs = reps + 1  # The first (compiling) call runs an epoch too.
  if runs * samples / sps <= budget_s:
    return samples, None
  if runs * bs / sps > 2 * budget_s:
    return samples, (f"skipped: ~{runs * bs / sps:.0f} s predicted at "
                     f"{sps:,.0f} samples/s (budget {budget_s:.0f} s)")
  return max(bs, int(budget_s * sps / runs) // bs * bs), None


def _key(r: dict[str, Any]) -> tuple:
  return r.get("arch"), r.get("batch_size"), r.get("impl"), r.get("all_devices", False)


def combine_rounds(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per job from R rounds, each ``{"peak": ..., "results": [...]}``.

  A row is the record of its median round (the lower middle for an even
  count), with ``rounds`` (each round's median samples/s, None where it
  failed), ``round_peaks`` (each round's matmul peak, GFLOP/s) and the
  training min and max over every round's repetitions; a job that failed in
  every round keeps its first error.
  """
  rows = []
  for first in rounds[0]["results"]:
    per_round = [next((rec for rec in rnd["results"]
                       if _key(rec) == _key(first) and "train" in rec), None)
                 for rnd in rounds]
    done = sorted((rec for rec in per_round if rec is not None),
                  key=lambda rec: rec["train"]["samples_per_s"])
    if not done:
      rows.append(first)
      continue
    row = dict(done[(len(done) - 1) // 2])
    row["train"] = {**row["train"],
                    "samples_per_s_min": min(r["train"]["samples_per_s_min"] for r in done),
                    "samples_per_s_max": max(r["train"]["samples_per_s_max"] for r in done)}
    row["rounds"] = [rec and rec["train"]["samples_per_s"] for rec in per_round]
    row["round_peaks"] = [rnd["peak"]["peak_gflops"] for rnd in rounds]
    rows.append(row)
  return rows


def _median(xs: list[float | None]) -> float | None:
  xs = [x for x in xs if x is not None]
  return statistics.median(xs) if xs else None


def round_ratios(row: dict[str, Any], base: dict[str, Any]) -> list[float | None] | None:
  """``row``'s samples/s over ``base``'s within each round (None without rounds)."""
  if "rounds" not in row or "rounds" not in base:
    return None
  return [x / y if x and y else None for x, y in zip(row["rounds"], base["rounds"])]


def paired_ratio(row: dict[str, Any], base: dict[str, Any]) -> float:
  """``row``'s throughput over ``base``'s: the median of the ratios within each
  round where both ran in rounds, else the ratio of their medians."""
  ratios = round_ratios(row, base)
  if ratios is None:
    return row["train"]["samples_per_s"] / base["train"]["samples_per_s"]
  return _median(ratios)


def add_ratios(results: list[dict[str, Any]], peak_gflops: float) -> None:
  """Adds ``ratio_to_pytorch`` and ``roofline_pct`` (of training) to each row.

  Rows with ``rounds`` (:func:`combine_rounds`) take the median of the ratios
  within each round (:func:`paired_ratio`), and of each round's percentage of
  that round's own peak; the per-round figures go in ``round_ratios`` and
  ``round_roofline_pcts``.
  """
  base = {(r["arch"], r["batch_size"]): r for r in results
          if r.get("impl") == BASELINE and "train" in r}
  for r in results:
    if "train" not in r:
      continue
    b = base.get((r["arch"], r["batch_size"]))
    flops = common.train_flops_per_sample(common.model_macs(r["arch"]))
    r["train_gflops"] = r["train"]["samples_per_s"] * flops / 1e9
    r["ratio_to_pytorch"] = paired_ratio(r, b) if b else None
    if "rounds" in r:
      r["round_ratios"] = round_ratios(r, b) if b else None
      r["round_roofline_pcts"] = [100.0 * x * flops / 1e9 / p if x and p else None
                                  for x, p in zip(r["rounds"], r["round_peaks"])]
      r["roofline_pct"] = _median(r["round_roofline_pcts"])
    else:
      r["roofline_pct"] = 100.0 * r["train_gflops"] / peak_gflops if peak_gflops else None
    if "infer" in r:
      r["infer_gflops"] = r["infer"]["samples_per_s"] * 2 * common.model_macs(r["arch"]) / 1e9


def peak_text(peak: dict[str, Any]) -> str:
  """``NumPy … GFLOP/s, JAX … GFLOP/s, MKL … GFLOP/s`` (NumPy and MKL only where
  they were timed: CPU float32)."""
  parts = [f"NumPy {peak['numpy_gflops']:,.0f} GFLOP/s"] if peak.get("numpy_gflops") else []
  parts.append(f"JAX {peak['jax_gflops']:,.0f} GFLOP/s")
  if peak.get("mkl_gflops"):
    parts.append(f"MKL (flaxae's kernel) {peak['mkl_gflops']:,.0f} GFLOP/s")
  return ", ".join(parts)


def _fmt(x: float | None, spec: str = ".0f") -> str:
  return "–" if x is None else format(x, spec)


def markdown_table(results: list[dict[str, Any]]) -> str:
  """One row per (model, batch size, implementation)."""
  head = ("| model | batch | impl | dev | train samples/s (median) | min–max | "
          "× PyTorch | % roofline | compile s | infer samples/s | peak RSS MiB | loss |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in results:
    name = r.get("impl", "?")
    lead = f"| {r.get('arch', '?')} | {r.get('batch_size', '?')} | {name} | "
    if "error" in r:
      lines.append(lead + f"– | failed: {r['error'][:80]} | | | | | | | |")
      continue
    t = r["train"]
    infer = r.get("infer", {}).get("samples_per_s")
    lines.append(
        lead + f"{r.get('devices', 1)} | {t['samples_per_s']:,.0f} | "
        f"{t['samples_per_s_min']:,.0f}–{t['samples_per_s_max']:,.0f} | "
        f"{_fmt(r.get('ratio_to_pytorch'), '.2f')} | {_fmt(r.get('roofline_pct'), '.0f')} | "
        f"{r['compile_s']:.2f} | {_fmt(infer, ',.0f')} | {r['peak_rss_mb']:.0f} | "
        f"{r['loss']:.4f} |")
  return "\n".join(lines)


def acceptance(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Issue 6's acceptance figures, from this run's rows (1-device flaxae)."""
  def row(impl, arch, bs):
    for r in results:
      if (r.get("impl") == impl and r.get("arch") == arch and r.get("batch_size") == bs
          and not r.get("all_devices") and "train" in r):
        return r
    return None

  def best(arch):
    """flaxae's fastest one-device row (XLA's or MKL's products), and its name."""
    rows = [(r, impl) for impl in FLAXAE_ONE_DEVICE if (r := row(impl, arch, 256))]
    return max(rows, key=lambda ri: ri[0]["train"]["samples_per_s"], default=(None, "flaxae"))

  checks = []

  def ratio(arch, other, need):
    (f, name), o = best(arch), row(other, arch, 256)
    value = paired_ratio(f, o) if f and o else None
    checks.append({"figure": f"{arch} b256: {name} / {other}", "need": f"≥ {need}",
                   "value": value, "holds": value is not None and value >= need,
                   "rounds": round_ratios(f, o) if f and o else None})

  ratio("dense", "pytorch", 1.5)
  ratio("dense", "keras-tf", 2.5)
  f, name = best("dense")
  value = f.get("roofline_pct") if f else None
  checks.append({"figure": f"dense b256: {name} % of matmul roofline", "need": "≥ 80",
                 "value": value, "holds": value is not None and value >= 80,
                 "rounds": f.get("round_roofline_pcts") if f else None})
  ratio("conv", "pytorch", 1.2)
  value = f["compile_s"] if f else None
  checks.append({"figure": f"dense b256: {name} fused-epoch compile s", "need": "≤ 5",
                 "value": value, "holds": value is not None and value <= 5, "rounds": None})
  return checks


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch-sizes", default="64,256,1024,4096", type=common.positive_ints)
  p.add_argument("--models", default="dense,conv", type=common.names_in(common.MODELS),
                 help=f"any of {', '.join(common.MODELS)}")
  p.add_argument("--impls", default=",".join(IMPLS),
                 type=common.names_in(IMPLS + OPTIONAL_IMPLS),
                 help=f"any of {', '.join(IMPLS + OPTIONAL_IMPLS)} (flaxae-all[-mkl]: every "
                      "device; flaxae-xla-conv: the conv AE with lax convolutions)")
  p.add_argument("--samples", type=common.non_negative_int, default=0,
                 help="examples per repetition (default: " + ", ".join(
                     f"{m} {n}" for m, n in DEFAULT_SAMPLES.items()) + ")")
  p.add_argument("--reps", type=common.positive_int, default=5,
                 help="timed repetitions (the issue asks for ≥ 5)")
  p.add_argument("--rounds", type=common.positive_int, default=1,
                 help="run every job this many times over, interleaved; ratios are the "
                      "median of those within each round")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--threads", type=common.positive_int, default=common.num_threads(),
                 help="cores every implementation may use (default: all)")
  p.add_argument("--budget", type=common.positive_float, default=150,
                 help="seconds a job may take; slow ones get fewer examples per repetition")
  p.add_argument("--timeout", type=common.positive_float, default=900,
                 help="seconds per subprocess")
  p.add_argument("--dtype", choices=common.DTYPES, default="float32",
                 help="every implementation's compute dtype (bfloat16: its mixed precision)")
  p.add_argument("--precision", choices=common.PRECISIONS, default="float32",
                 help="float32 products on a GPU: exact, or TF32 (the same for everyone)")
  p.add_argument("--matmul-size", type=common.positive_int, default=2048,
                 help="n of the n×n matmul (in --dtype) that measures the peak")
  p.add_argument("--omp-passive", action="store_true",
                 help="OMP_WAIT_POLICY=PASSIVE for every subprocess: on a machine shared "
                      "with other jobs (it slows PyTorch on an idle one)")
  p.add_argument("--quick", action="store_true",
                 help="smoke run: batch 64, 2 repetitions of 512 examples")
  p.add_argument("--out", default="",
                 help="the JSON file (default: benchmarks/out/throughput.json, or "
                      "throughput-quick.json with --quick)")
  args = p.parse_args(argv)
  if args.quick:
    args.batch_sizes, args.samples, args.reps = [64], 512, 2
  name = "throughput-quick.json" if args.quick else "throughput.json"
  args.out = common.output_file(p, args.out or f"benchmarks/out/{name}")
  return args


def run_round(args, env: dict[str, str], done: list[dict[str, Any]]
              ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
  """The matmul peak, then every job, each in its own subprocess; ``done``:
  earlier rounds' records (for :func:`plan_samples`). The peak is None (and
  reported) when its measurement failed."""
  # --- The roofline: a large matmul in the run's dtype --------------------------
  peak = run_process("benchmarks.roofline", [
      "--n", str(args.matmul_size), "--dtype", args.dtype, "--precision", args.precision],
                     env=env, timeout=args.timeout)[0]
  if "error" in peak:
    print(f"roofline failed: {peak['error']}", file=sys.stderr)
    return None, []
  print(f"# {args.dtype} matmul peak: {peak_text(peak)} ({peak['platform']}, "
        f"{peak['device_count']} device(s))", file=sys.stderr)
  devices_all = peak["device_count"] if peak["device_count"] > 1 else (
      args.threads if peak["platform"] == "cpu" else 1)

  # --- Every implementation, each in its own subprocess ---------------------------
  results = []
  for model, bs, impl, module, argv_, extra_env in _jobs(args, devices_all,
                                                          peak["platform"]):
    pkg = PEERS.get(impl, (None, None, "jax"))[2]
    samples = args.samples or SLOW_SAMPLES.get((impl, model), DEFAULT_SAMPLES[model])
    samples, skip = plan_samples(done + results, impl, model, bs, samples, args.reps,
                                 args.budget)
    if importlib.util.find_spec(pkg) is None:
      rec = {"error": f"{pkg} is not installed (pip install -e '.[bench]')"}
    elif skip:
      rec = {"error": skip}
    else:
      t0 = time.perf_counter()
      rec = run_process(module, [*argv_, "--samples", str(samples)],
                        env={**env, **extra_env}, timeout=args.timeout)[0]
      rec["wall_s"] = time.perf_counter() - t0
    rec.update(impl=ALL_DEVICES.get(impl, impl), arch=model, batch_size=bs,
               all_devices=impl in ALL_DEVICES)
    results.append(rec)
    status = rec.get("error") or f"{rec['train']['samples_per_s']:,.0f} samples/s"
    print(f"# {model:5} b{bs:<5} {impl:14} {status}", file=sys.stderr, flush=True)
  return peak, results


def main(argv=None) -> int:
  args = parse_args(argv)
  started, load_start = time.time(), os.getloadavg()
  env = {**os.environ, **common.thread_env(args.threads, args.omp_passive)}
  env.setdefault("JAX_PLATFORMS", "")
  env["PYTHONWARNINGS"] = "ignore"
  print(f"# threads per implementation: {args.threads}", file=sys.stderr)

  rounds = []
  for rnd in range(args.rounds):
    if args.rounds > 1:
      print(f"# round {rnd + 1} of {args.rounds}", file=sys.stderr, flush=True)
    done = [rec for r in rounds for rec in r["results"]]
    peak, results = run_round(args, env, done)
    if peak is None:
      return 1
    rounds.append({"peak": peak, "results": results})
  if args.rounds > 1:
    results = combine_rounds(rounds)
    peaks = [r["peak"] for r in rounds]
    peak = {**sorted(peaks, key=lambda p: p["peak_gflops"])[(len(peaks) - 1) // 2],
            "round_peaks": [p["peak_gflops"] for p in peaks]}

  # --- Report -----------------------------------------------------------------------
  add_ratios(results, peak["peak_gflops"])
  checks = acceptance(results)
  table = markdown_table(results)
  print(table)
  print()
  print(f"Matmul peak ({peak['n']}² {args.dtype}, best of {peak['repeats']}): "
        f"{peak_text(peak)}. Training FLOPs/sample: " + ", ".join(
            f"{m} {common.train_flops_per_sample(common.model_macs(m)) / 1e6:.1f} M"
            for m in args.models) + ".")
  print()
  if args.rounds > 1:
    print(f"Median of {args.rounds} rounds: each row is its median round; ratios and "
          "roofline percentages are medians of those within each round (peaks "
          + ", ".join(f"{g:,.0f}" for g in peak["round_peaks"]) + " GFLOP/s).")
    print()
  print("| acceptance (issue 6) | need | value | per round | holds |\n|---|---|---|---|---|")
  for c in checks:
    holds = "not measured" if c["value"] is None else "yes" if c["holds"] else "no"
    per_round = ", ".join(_fmt(x, ".2f") for x in c["rounds"] or [])
    print(f"| {c['figure']} | {c['need']} | {_fmt(c['value'], '.2f')} | {per_round or '–'} "
          f"| {holds} |")
  meta = {
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "command": " ".join(["python -m benchmarks.throughput", *(argv or sys.argv[1:])]),
      "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
      "platform": peak["platform"], "device_kind": peak.get("device_kind"),
      "dtype": args.dtype, "precision": args.precision,
      "python": platform.python_version(), "versions": _versions(results, peak),
      "seconds": time.time() - started, "reps": args.reps, "rounds": args.rounds,
      "baseline": BASELINE, "git": git_state(),
      "loadavg_1_5_15_start": load_start, "loadavg_1_5_15_end": os.getloadavg(),
  }
  io.write_json(args.out, {"meta": meta, "peak": peak, "results": results,
                           "acceptance": checks})
  print(f"\n# wrote {args.out} ({meta['seconds']:.0f} s)", file=sys.stderr)
  return 0


def _versions(results, peak) -> dict[str, str]:
  versions = dict(peak.get("versions", {}))
  for r in results:
    for k, v in r.get("versions", {}).items():
      versions.setdefault(k, v)
  return versions


if __name__ == "__main__":
  sys.exit(main())
