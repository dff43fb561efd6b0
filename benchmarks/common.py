"""What every benchmark process shares: models' sizes, data, FLOPs, timing.

Imports nothing but the standard library, NumPy and :mod:`flaxae.timing`
(which has no JAX), so that each peer (PyTorch, Keras) loads only its own
framework; the timing, memory and FLOP counting are the library's own.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from flaxae import io
from flaxae.errors import OutputError
from flaxae.timing import (conv_macs, dense_macs, peak_rss_mb, steps_per_rep, summarize,
                           train_flops_per_sample)

__all__ = ["conv_macs", "dense_macs", "peak_rss_mb", "steps_per_rep", "summarize",
           "train_flops_per_sample"]  # Re-exported for the benchmark processes.

JSON_PREFIX = "BENCH_JSON "
IMAGE_SHAPE = (28, 28, 1)
DENSE_WIDTHS = (256, 64)  # 784-256-64-256-784.
CONV_CHANNELS = (32, 64)  # 28→14→7 and back; a spatial 7×7×64 code.
KERNEL_SIZE = 3
LEARNING_RATE = 1e-3
ADAM_EPS = 1e-8  # Optax's and PyTorch's default; Keras's is 1e-7, so it is set.
MODELS = ("dense", "conv")
DTYPES = ("float32", "bfloat16")
# GPU float32 products: JAX's default lets XLA use TF32 for dots and convs, PyTorch's
# allows TF32 in cuDNN's convs but not in its matmuls; every implementation is set to
# the same one of these two so that a table compares the same arithmetic.
PRECISIONS = ("float32", "tf32")


def num_threads() -> int:
  """The number of cores every implementation is told to use."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
      os.cpu_count() or 1)


def thread_env(threads: int, omp_passive: bool = False) -> dict[str, str]:
  """Environment that pins the OpenMP/MKL/TF pools of a subprocess to ``threads``.

  OpenMP's wait policy is left at its default (threads spin between parallel
  regions), PyTorch's best on an otherwise idle machine: dense batch 256,
  56.6k samples/s spinning against 28.2k with ``OMP_WAIT_POLICY=PASSIVE``.
  On a machine shared with other jobs, spinning threads collapse instead
  (1.2k samples/s measured), so ``omp_passive`` sets the passive policy for
  measurements that cannot have the machine to themselves.
  """
  n = str(threads)
  env = {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
         "TF_NUM_INTRAOP_THREADS": n, "TF_CPP_MIN_LOG_LEVEL": "2"}
  if omp_passive:
    env["OMP_WAIT_POLICY"] = "PASSIVE"
  return env


def use_threads(threads: int) -> None:
  """Confines this process to ``threads`` of the cores it may run on (the
  first ones), so that a framework that sizes its pool from the cores (XLA)
  uses no more threads than the others are told to."""
  if hasattr(os, "sched_setaffinity"):
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
      os.sched_setaffinity(0, cores[:threads])


# --- Command-line arguments -------------------------------------------------------


def positive_int(text: str) -> int:
  """An argparse ``type``: an integer of at least 1."""
  return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
  """An argparse ``type``: an integer of at least 0."""
  return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
  if value < low:
    raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
  return value


def positive_float(text: str) -> float:
  """An argparse ``type``: a finite number above 0."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
  if not 0 < value < float("inf"):
    raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
  return value


def positive_ints(text: str) -> list[int]:
  """An argparse ``type``: comma-separated integers of at least 1 (one or more)."""
  values = [positive_int(x) for x in text.split(",") if x.strip()]
  if not values:
    raise argparse.ArgumentTypeError("needs at least one value")
  return values


def names_in(known: Sequence[str]) -> Callable[[str], list[str]]:
  """An argparse ``type``: comma-separated names, each one of ``known``."""
  def parse(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
      raise argparse.ArgumentTypeError("needs at least one name")
    for name in names:
      if name not in known:
        raise argparse.ArgumentTypeError(f"unknown {name!r}; known: {', '.join(known)}")
    return names
  return parse


def output_file(parser: argparse.ArgumentParser, path: str) -> str:
  """``path`` once its folder exists (created if need be) and it can be
  written, checked before any measurement; else the parser's error (exit 2)."""
  try:
    io.make_dir(os.path.dirname(path) or ".")
    io.check_output(path)
  except OutputError as e:
    parser.error(str(e))
  return path


def make_images(num: int, seed: int = 0,
                shape: Sequence[int] = IMAGE_SHAPE) -> np.ndarray:
  """``(num, *shape)`` float32 images of random bytes scaled to [0, 1]."""
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (num, *shape), dtype=np.uint8)
          .astype(np.float32) / 255.0)


# --- FLOPs ---------------------------------------------------------------------


def model_macs(model: str) -> int:
  """MACs of the benchmark's ``dense`` or ``conv`` AE."""
  if model == "dense":
    return dense_macs(int(np.prod(IMAGE_SHAPE)), DENSE_WIDTHS)
  return conv_macs(IMAGE_SHAPE, CONV_CHANNELS, KERNEL_SIZE)


# --- Timing and memory -----------------------------------------------------------


def emit(record: dict[str, Any]) -> None:
  """Prints one result line for the parent process to parse."""
  print(JSON_PREFIX + json.dumps(record), flush=True)


def parse_records(stdout: str) -> list[dict[str, Any]]:
  """The result lines of a benchmark subprocess's output."""
  return [json.loads(line[len(JSON_PREFIX):]) for line in stdout.splitlines()
          if line.startswith(JSON_PREFIX)]


def peer_args(argv: Sequence[str] | None = None, description: str = "",
              extra: Callable[[argparse.ArgumentParser], None] | None = None,
              ) -> argparse.Namespace:
  """The arguments every implementation's process takes (``extra`` adds more)."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--model", choices=MODELS, default="dense")
  p.add_argument("--batch-size", type=positive_int, default=256)
  p.add_argument("--samples", type=positive_int, default=16384,
                 help="examples per timed repetition (one epoch)")
  p.add_argument("--reps", type=positive_int, default=5, help="timed repetitions")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--threads", type=positive_int, default=num_threads(),
                 help="cores this process may use (default: all)")
  p.add_argument("--no-inference", action="store_true")
  p.add_argument("--dtype", choices=DTYPES, default="float32",
                 help="compute dtype: float32, or bfloat16 mixed precision (float32 "
                      "parameters and optimizer state, products in bfloat16)")
  p.add_argument("--precision", choices=PRECISIONS, default="float32",
                 help="float32 products on GPUs: exact float32 (every framework's "
                      "'highest'), or tf32 (the matrix units' 10-bit-mantissa mode); "
                      "CPUs compute float32 either way")
  if extra:
    extra(p)
  args = p.parse_args(argv)
  use_threads(args.threads)
  return args
