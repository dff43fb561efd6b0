"""The device's matmul peak, measured: the roofline's ceiling.

``python -m benchmarks.roofline`` prints one JSON line with the best GFLOP/s of
a large square matmul in JAX (XLA) and, for float32 on a CPU, in NumPy (its
BLAS), with the JAX platform and device count
(:func:`flaxae.benchmark.matmul_peak`). ``--dtype`` and ``--precision`` are
the benchmark's own: the ceiling is that of the arithmetic the models use.
"""

from __future__ import annotations

import argparse

from benchmarks import common


def measure(n: int = 2048, repeats: int = 10, dtype: str = "float32",
            precision: str = "float32") -> dict:
  """GFLOP/s of an ``n×n @ n×n`` matmul in JAX (and NumPy for float32 on CPU)."""
  # pylint: disable-next=import-outside-toplevel
  from flaxae.benchmark import matmul_peak, set_matmul_precision
  set_matmul_precision(precision)
  return matmul_peak(n, repeats, dtype)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="matmul peak")
  p.add_argument("--n", type=common.positive_int, default=2048)
  p.add_argument("--repeats", type=common.positive_int, default=10)
  p.add_argument("--dtype", choices=common.DTYPES, default="float32")
  p.add_argument("--precision", choices=common.PRECISIONS, default="float32")
  args = p.parse_args(argv)
  common.emit(measure(args.n, args.repeats, args.dtype, args.precision))


if __name__ == "__main__":
  main()
