"""flaxae's training and inference throughput, through the library's real path.

The measurement itself is the library's (:mod:`flaxae.benchmark`, which
``flaxae bench`` runs with a user's config); this module fixes the issue's two
models and runs one of them as a benchmark process:
``python -m benchmarks.flaxae_bench --model dense --batch-size 256`` prints one
JSON line for :mod:`benchmarks.throughput`.
"""

from __future__ import annotations

import dataclasses

from benchmarks import common
from flaxae.benchmark import model_macs, run, set_matmul_precision, tiled, user_benchmark
from flaxae.config import Config, ModelConfig, TrainConfig

__all__ = ["benchmark_config", "model_macs", "run", "tiled", "user_benchmark"]


def benchmark_config(model: str, batch_size: int, num_devices: int = 1,
                     compute_dtype: str = "float32", conv_impl: str = "matmul",
                     cpu_matmuls: str = "xla") -> Config:
  """The issue's dense (784-256-64) or conv (32→64, spatial code) AE: BCE, Adam 1e-3."""
  if model == "dense":
    mcfg = ModelConfig(arch="dense", widths=common.DENSE_WIDTHS, loss="bce")
  else:
    mcfg = ModelConfig(arch="conv", channels=common.CONV_CHANNELS, latent_dim=0,
                       kernel_size=common.KERNEL_SIZE, loss="bce")
  return Config(model=mcfg, train=TrainConfig(
      batch_size=batch_size, optimizer="adam", learning_rate=common.LEARNING_RATE,
      schedule="constant", num_devices=num_devices, epochs=1,
      compute_dtype=compute_dtype, conv_impl=conv_impl, cpu_matmuls=cpu_matmuls))


def main(argv=None) -> None:
  def extra(p):
    p.add_argument("--devices", type=int, default=1, help="0: all devices")
    p.add_argument("--strategy", choices=("jit", "shard_map"), default="jit")
    p.add_argument("--conv-impl", choices=("matmul", "xla"), default="matmul",
                   help="the conv AE's convolutions: flaxae's matmul forms or lax's")
    p.add_argument("--cpu-matmuls", choices=("xla", "eigen", "mkl"), default="xla",
                   help="train.cpu_matmuls: who computes the products on CPU")

  args = common.peer_args(argv, "flaxae throughput", extra)
  set_matmul_precision(args.precision)
  cfg = benchmark_config(args.model, args.batch_size, args.devices, args.dtype,
                         args.conv_impl, args.cpu_matmuls)
  cfg = dataclasses.replace(
      cfg, train=dataclasses.replace(cfg.train, strategy=args.strategy))
  steps = common.steps_per_rep(args.batch_size, args.samples)
  data = common.make_images(steps * args.batch_size, args.seed)
  record = run(cfg, data, reps=args.reps, inference=not args.no_inference)
  common.emit({**record, "dtype": args.dtype, "precision": args.precision,
               "conv_impl": args.conv_impl, "cpu_matmuls": args.cpu_matmuls})


if __name__ == "__main__":
  main()
