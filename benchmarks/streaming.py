"""Streaming from a memory-mapped file against data resident on the device.

    python -m benchmarks.streaming [--examples 60000] [--epochs 4] [--rounds 2]

Writes ``--examples`` random 28×28 uint8 images to a ``.npy`` file and trains
the dense 784-256-64-256-784 AE (BCE, Adam, batch 256) on it through the
library's own loop (:func:`flaxae.fit`) twice per round: with the training
set resident on the device (one epoch fused into one compiled call) and with
``data.stream=True`` (the file memory-mapped, each chunk read and sent to the
devices by a background feeder while the previous chunk trains). Throughput
is the loop's own per-epoch ``samples_per_s`` (training only, evaluation
apart); the first epoch (compilation) is dropped; the modes alternate, so that
load on the machine hits both alike. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import jax
import numpy as np

from benchmarks import common
from flaxae import io
from flaxae.api import fit
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig


def _config(path: Path, run_dir: Path, stream: bool, args) -> Config:
  return Config(
      data=DataConfig(name="npy", path=str(path), test_fraction=0.02, stream=stream),
      model=ModelConfig(arch="dense", widths=(256, 64), loss="bce"),
      train=TrainConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=1e-3,
                        steps_per_call=args.steps_per_call, eval_batch_size=1000),
      checkpoint=CheckpointConfig(every_steps=10**9, keep=1),
      run_dir=str(run_dir))


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--examples", type=common.positive_int, default=60000)
  p.add_argument("--epochs", type=common.positive_int, default=4,
                 help="per run, at least 2: the first is dropped")
  p.add_argument("--rounds", type=common.positive_int, default=2,
                 help="runs of each mode, alternating")
  p.add_argument("--batch", type=common.positive_int, default=256)
  p.add_argument("--steps_per_call", type=common.non_negative_int, default=0,
                 help="steps per compiled call (0: one epoch)")
  p.add_argument("--out", default="benchmarks/out/streaming.json")
  args = p.parse_args(argv)
  if args.epochs < 2:
    p.error(f"--epochs must be at least 2 (the first, which compiles, is dropped), "
            f"got {args.epochs}")
  if args.batch > args.examples:
    p.error(f"--batch ({args.batch}) is larger than --examples ({args.examples})")
  common.output_file(p, args.out)
  rates: dict[str, list[float]] = {"resident": [], "stream": []}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    images = np.random.default_rng(0).integers(0, 256, (args.examples, 28, 28),
                                               dtype=np.uint8)
    np.save(tmp / "images.npy", images)
    del images
    for r in range(args.rounds):
      for mode in rates:
        cfg = _config(tmp / "images.npy", tmp / f"{mode}-{r}", mode == "stream", args)
        run = fit(cfg, progress=False)
        rates[mode] += [h["samples_per_s"] for h in run.history[1:]]
  rows = {mode: {"samples_per_s_median": statistics.median(v), "min": min(v), "max": max(v),
                 "epochs": len(v)} for mode, v in rates.items()}
  ratio = rows["stream"]["samples_per_s_median"] / rows["resident"]["samples_per_s_median"]
  print(f"Dense 784-256-64-256-784, batch {args.batch}, {args.examples} examples, "
        f"{jax.devices()[0].platform}, jax {jax.__version__}")
  print("| data path | samples/s (median of epochs) | min | max | epochs |")
  print("|---|---|---|---|---|")
  for mode, row in rows.items():
    print(f"| {mode} | {row['samples_per_s_median']:,.0f} | {row['min']:,.0f} | "
          f"{row['max']:,.0f} | {row['epochs']} |")
  print(f"stream / resident: {ratio:.3f}")
  out = {"args": vars(args), "rows": rows, "ratio": ratio, "per_epoch": rates,
         "jax": jax.__version__}
  io.write_json(args.out, out)
  return out


if __name__ == "__main__":
  main()
