"""Many seeds in one compiled program vs the same seeds one after another.

    python -m benchmarks.seeds [--seeds 8] [--batch 128] [--reps 5] [--cpu-devices N]

Dense 784-32-784 autoencoder (BCE, Adam 1e-3), one epoch of random images
fused with ``lax.scan`` through flaxae's real chunk (``make_train_chunk``).
On CPU the process gets one XLA device per core (``jax_num_cpu_devices``,
``--cpu-devices``; 0 leaves JAX's default), the same hardware for every row:

* "sequential, 1 device" and "sequential, N devices": the single-seed program
  run once per seed, on one device, and data-parallel over all of them; the
  faster of the two is the baseline.
* "one program, 1 device": all seeds in one program on one device (vmapped
  side by side, ``train.seeds_vmapped`` = all).
* "one program": ``train.num_seeds`` as the library runs it: the seeds split
  over the devices (the ``seed`` mesh axis), each device training its share.
* On CPU, "sequential, 1 device" and "one program" again with
  ``train.cpu_matmuls=eigen`` (Eigen's products instead of XLA's default
  YNNPACK fusions), which suits this small model, and with
  ``train.cpu_matmuls=mkl`` (MKL's, :mod:`flaxae.kernels`) where MKL is
  installed: the best of each against the best.

Throughput is summed over seeds; compile time is reported apart (the first
epoch less a steady one); the steady state is the median of ``reps`` (the programs' epochs interleaved). Prints a
table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from benchmarks import common
from flaxae import io
from flaxae.kernels import native
from flaxae.config import Config, ModelConfig, TrainConfig
from flaxae.train import parallel
from flaxae.train.build import setup


def _runner(num_seeds: int, batch: int, data: np.ndarray, num_devices: int,
            seeds_vmapped: int, cpu_matmuls: str):
  # Seeds whose groups span several devices take MKL's products per device
  # (parallel.model_matmuls).
  data_parallel = parallel.make_mesh(num_devices, num_seeds).shape[parallel.DATA_AXIS] > 1
  strategy = "shard_map" if cpu_matmuls == "mkl" and data_parallel and num_seeds > 1 else "jit"
  cfg = Config(model=ModelConfig(widths=(32,)),
               train=TrainConfig(batch_size=batch, num_devices=num_devices,
                                 num_seeds=num_seeds, seeds_vmapped=seeds_vmapped,
                                 cpu_matmuls=cpu_matmuls, strategy=strategy))
  built = setup(cfg, data.shape[1:], len(data))
  on_device = parallel.put(data, parallel.replicated(built.mesh))
  state = jax.jit(built.init, out_shardings=built.state_sharding)()
  orders = parallel.EpochOrders(state.rng, len(data), batch, built.mesh, num_seeds)
  return Run(built.chunk, state, on_device, orders, len(data) // batch)


class Run(NamedTuple):
  """One compiled program, its state and data, and the epochs it trained."""

  chunk: Callable
  state: Any
  data: jax.Array
  orders: parallel.EpochOrders
  steps_per_epoch: int
  epochs: int = 0


class Program:
  """``programs`` runs of a ``num_seeds``-seed program (one after another)."""

  def __init__(self, num_seeds: int, batch: int, data: np.ndarray, programs: int = 1,
               num_devices: int = 1, seeds_vmapped: int = 0, cpu_matmuls: str = "xla"):
    self.runs = [_runner(num_seeds, batch, data, num_devices, seeds_vmapped, cpu_matmuls)
                 for _ in range(programs)]
    first = self.epoch()  # Compiles each program, then trains its first epoch.
    self.compile_s = max(0.0, first - self.epoch())  # Less a steady epoch.

  def epoch(self) -> float:
    """Seconds of one epoch of every program."""
    t = time.perf_counter()
    for i, run in enumerate(self.runs):
      spe = run.steps_per_epoch
      state, _ = run.chunk(run.state, run.data, run.orders(run.epochs * spe), spe)
      self.runs[i] = run._replace(state=jax.block_until_ready(state), epochs=run.epochs + 1)
    return time.perf_counter() - t


def measure(programs: dict[str, Program], reps: int) -> dict[str, list[float]]:
  """Epoch seconds of each program, interleaved so that load hits all alike."""
  epochs = {name: [] for name in programs}
  for _ in range(reps):
    for name, program in programs.items():
      epochs[name].append(program.epoch())
  return epochs


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=common.positive_int, default=8)
  parser.add_argument("--batch", type=common.positive_int, default=128)
  parser.add_argument("--steps", type=common.positive_int, default=100,
                      help="steps per epoch")
  parser.add_argument("--reps", type=common.positive_int, default=5)
  parser.add_argument("--cpu-devices", type=common.non_negative_int, default=os.cpu_count(),
                      help="XLA CPU devices for this process (0: JAX's default)")
  parser.add_argument("--out", default="benchmarks/out/seeds.json")
  args = parser.parse_args(argv)
  common.output_file(parser, args.out)
  if args.cpu_devices:
    try:
      jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    except RuntimeError:  # JAX already started (say, inside another program).
      print(f"note: JAX is already running on {jax.device_count()} device(s); "
            "--cpu-devices ignored")
  n = jax.device_count()
  data = np.random.default_rng(0).random((args.steps * args.batch, 784), np.float32)
  samples = args.seeds * args.steps * args.batch
  programs = {"sequential, 1 device": Program(1, args.batch, data, args.seeds)}
  if n > 1 and args.batch % n == 0:
    programs[f"sequential, {n} devices"] = Program(1, args.batch, data, args.seeds, n)
  programs["one program, 1 device"] = Program(args.seeds, args.batch, data,
                                              seeds_vmapped=args.seeds)
  programs["one program"] = Program(args.seeds, args.batch, data, num_devices=n)
  if jax.default_backend() == "cpu":  # Best against best: the other matmul library.
    programs["sequential, 1 device, Eigen matmuls"] = Program(
        1, args.batch, data, args.seeds, cpu_matmuls="eigen")
    programs["one program, Eigen matmuls"] = Program(args.seeds, args.batch, data,
                                                     num_devices=n, cpu_matmuls="eigen")
    if native.available():
      programs["sequential, 1 device, MKL matmuls"] = Program(
          1, args.batch, data, args.seeds, cpu_matmuls="mkl")
      programs["one program, MKL matmuls"] = Program(args.seeds, args.batch, data,
                                                     num_devices=n, cpu_matmuls="mkl")
  rows = {}
  for name, epochs in measure(programs, args.reps).items():
    rows[name] = {
        "compile_s": programs[name].compile_s,
        "samples_per_s_median": samples / statistics.median(epochs),
        "samples_per_s_min": samples / max(epochs),
        "samples_per_s_max": samples / min(epochs),
    }
  def fastest(prefix: str, *, defaults_only: bool) -> tuple[str, dict]:
    return max(((k, r) for k, r in rows.items() if k.startswith(prefix)
                and not (defaults_only and ("Eigen" in k or "MKL" in k))),
               key=lambda kr: kr[1]["samples_per_s_median"])

  library = rows["one program"]["samples_per_s_median"]
  ratio = library / fastest("sequential", defaults_only=True)[1]["samples_per_s_median"]
  best_seq, best_one = (fastest(p, defaults_only=False) for p in ("sequential", "one program"))
  best_ratio = best_one[1]["samples_per_s_median"] / best_seq[1]["samples_per_s_median"]
  print(f"Dense 784-32-784, batch {args.batch}, {args.seeds} seeds, "
        f"{args.steps} steps/epoch, {n} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} cores, jax {jax.__version__}")
  print("| program | samples/s (median, summed over seeds) | min | max | compile s |")
  print("|---|---|---|---|---|")
  for name, r in rows.items():
    print(f"| {name} | {r['samples_per_s_median']:,.0f} | {r['samples_per_s_min']:,.0f} | "
          f"{r['samples_per_s_max']:,.0f} | {r['compile_s']:.2f} |")
  print(f"one program / faster sequential (XLA's defaults, as the library runs): "
        f"{ratio:.2f}×")
  print(f"fastest one program / fastest sequential: {best_ratio:.2f}× "
        f"({best_one[0]} / {best_seq[0]})")
  out = {"args": vars(args), "rows": rows, "ratio": ratio, "best_ratio": best_ratio,
         "jax": jax.__version__}
  io.write_json(args.out, out)
  return out


if __name__ == "__main__":
  main()
