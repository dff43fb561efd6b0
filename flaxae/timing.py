"""Timing, memory and FLOP counting for throughput measurements.

Standard library and NumPy only (no JAX), so that the PyTorch and Keras
processes of ``benchmarks/`` share these definitions with :mod:`flaxae.benchmark`
without loading JAX.
"""

from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from typing import Callable, Sequence


def summarize(times: Sequence[float], samples: int) -> dict[str, float]:
  """Median, min and max seconds of the repetitions, and samples/s of each."""
  med = statistics.median(times)
  return {
      "median_s": med, "min_s": min(times), "max_s": max(times), "reps": len(times),
      "samples_per_s": samples / med,
      "samples_per_s_min": samples / max(times),
      "samples_per_s_max": samples / min(times),
  }


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
  """Fastest of ``repeats`` timed calls of ``fn`` (after one warm-up call)."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far (MiB)."""
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


def steps_per_rep(batch_size: int, samples: int) -> int:
  """Steps in one timed repetition: about ``samples`` examples, at least one."""
  return max(1, samples // batch_size)


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
  macs = 0
  for ch in channels:  # Stride-2 SAME convolutions.
    h, w = math.ceil(h / 2), math.ceil(w / 2)
    macs += h * w * k2 * c * ch
    c = ch
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
