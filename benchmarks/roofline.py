"""The device's float32 matmul peak, measured: the roofline's ceiling.

``python -m benchmarks.roofline`` prints one JSON line with the best GFLOP/s of
a large square float32 matmul in NumPy (its BLAS) and in JAX (XLA), and the
JAX platform and device count (:func:`flaxae.benchmark.matmul_peak`).
"""

from __future__ import annotations

import argparse

from benchmarks import common


def measure(n: int = 2048, repeats: int = 10) -> dict:
  """GFLOP/s of an ``n×n @ n×n`` float32 matmul in NumPy and in JAX."""
  from flaxae.benchmark import matmul_peak  # pylint: disable=import-outside-toplevel
  return matmul_peak(n, repeats)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="float32 matmul peak")
  p.add_argument("--n", type=int, default=2048)
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args(argv)
  common.emit(measure(args.n, args.repeats))


if __name__ == "__main__":
  main()
