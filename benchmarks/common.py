"""What every benchmark process shares: models' sizes, data, FLOPs, timing.

Imports nothing but the standard library and NumPy, so that each peer (PyTorch,
Keras) loads only its own framework.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
from typing import Any, Callable, Sequence

import numpy as np

JSON_PREFIX = "BENCH_JSON "
IMAGE_SHAPE = (28, 28, 1)
DENSE_WIDTHS = (256, 64)  # 784-256-64-256-784.
CONV_CHANNELS = (32, 64)  # 28→14→7 and back; a spatial 7×7×64 code.
KERNEL_SIZE = 3
LEARNING_RATE = 1e-3
ADAM_EPS = 1e-8  # Optax's and PyTorch's default; Keras's is 1e-7, so it is set.
MODELS = ("dense", "conv")


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


def make_images(num: int, seed: int = 0,
                shape: Sequence[int] = IMAGE_SHAPE) -> np.ndarray:
  """``(num, *shape)`` float32 images of random bytes scaled to [0, 1]."""
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (num, *shape), dtype=np.uint8)
          .astype(np.float32) / 255.0)


def steps_per_rep(batch_size: int, samples: int) -> int:
  """Steps in one timed repetition: about ``samples`` examples, at least one."""
  return max(1, samples // batch_size)


# --- FLOPs ---------------------------------------------------------------------


def dense_macs(num_features: int, widths: Sequence[int]) -> int:
  """Multiply-accumulates of one example through a mirrored dense AE."""
  sizes = [num_features, *widths, *reversed(widths[:-1]), num_features]
  return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def conv_macs(image_shape: Sequence[int], channels: Sequence[int], kernel_size: int,
              latent_dim: int = 0) -> int:
  """Multiply-accumulates of one example through flaxae's conv AE.

  Counts the model's convolutions as convolutions (``out positions · k² ·
  in · out``; a stride-2 transposed convolution as ``in positions · k² · in ·
  out``), whatever algorithm runs them.
  """
  h, w, c = image_shape
  k2 = kernel_size * kernel_size
  macs, sizes = 0, [(h, w)]
  for ch in channels:  # Stride-2 SAME convolutions.
    h, w = math.ceil(h / 2), math.ceil(w / 2)
    macs += h * w * k2 * c * ch
    c = ch
    sizes.append((h, w))
  if latent_dim:
    macs += 2 * h * w * c * latent_dim  # The dense code and the decoder's grid.
  for ch in reversed(channels):  # Stride-2 transposed convolutions.
    macs += h * w * k2 * c * ch
    h, w, c = 2 * h, 2 * w, ch
  macs += h * w * k2 * c * image_shape[2]  # The logits convolution.
  return macs


def train_flops_per_sample(macs: int) -> int:
  """2 FLOPs a MAC, times 3 for forward + backward (the usual convention)."""
  return 2 * 3 * macs


def model_macs(model: str) -> int:
  """MACs of the benchmark's ``dense`` or ``conv`` AE."""
  if model == "dense":
    return dense_macs(int(np.prod(IMAGE_SHAPE)), DENSE_WIDTHS)
  return conv_macs(IMAGE_SHAPE, CONV_CHANNELS, KERNEL_SIZE)


# --- Timing and memory -----------------------------------------------------------


def summarize(times: Sequence[float], samples: int) -> dict[str, float]:
  """Median, min and max seconds of the repetitions, and samples/s of each."""
  med = statistics.median(times)
  return {
      "median_s": med, "min_s": min(times), "max_s": max(times), "reps": len(times),
      "samples_per_s": samples / med,
      "samples_per_s_min": samples / max(times),
      "samples_per_s_max": samples / min(times),
  }


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far (MiB)."""
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


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
  p.add_argument("--batch-size", type=int, default=256)
  p.add_argument("--samples", type=int, default=16384,
                 help="examples per timed repetition (one epoch)")
  p.add_argument("--reps", type=int, default=5, help="timed repetitions")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--threads", type=int, default=num_threads())
  p.add_argument("--no-inference", action="store_true")
  if extra:
    extra(p)
  return p.parse_args(argv)
