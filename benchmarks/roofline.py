"""The device's float32 matmul peak, measured: the roofline's ceiling.

``python -m benchmarks.roofline`` prints one JSON line with the best GFLOP/s of
a large square float32 matmul in NumPy (its BLAS) and in JAX (XLA), and the
JAX platform and device count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import common


def best_seconds(fn, repeats: int) -> float:
  """Fastest of ``repeats`` timed calls (after one warm-up call)."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def measure(n: int = 2048, repeats: int = 10) -> dict:
  """GFLOP/s of an ``n×n @ n×n`` float32 matmul in NumPy and in JAX."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  flops = 2 * n**3
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  np_s = best_seconds(lambda: a @ b, repeats)
  ja, jb = jax.device_put(a), jax.device_put(b)
  matmul = jax.jit(jnp.matmul)
  jax_s = best_seconds(lambda: matmul(ja, jb).block_until_ready(), repeats)
  numpy_gflops, jax_gflops = flops / np_s / 1e9, flops / jax_s / 1e9
  return {
      "n": n, "repeats": repeats, "numpy_gflops": numpy_gflops, "jax_gflops": jax_gflops,
      "peak_gflops": max(numpy_gflops, jax_gflops),
      "platform": jax.default_backend(), "device_count": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "versions": {"jax": jax.__version__, "numpy": np.__version__},
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="float32 matmul peak")
  p.add_argument("--n", type=int, default=2048)
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args(argv)
  common.emit(measure(args.n, args.repeats))


if __name__ == "__main__":
  main()
