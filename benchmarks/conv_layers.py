"""Each layer of the conv AE alone, forward and forward+backward, three ways.

    python -m benchmarks.conv_layers [--batch-size 256]

For every layer of the benchmark's conv AE: flaxae's matmul layers
(:mod:`flaxae.models.layers`: im2col, or the output-side form where it moves
less memory, and transposed convolutions by output phase, without zero taps;
their gradients written by hand) and Flax's ``nn.Conv`` / ``nn.ConvTranspose``
(XLA's convolution). For the stride-1 logits layer, which flaxae computes on
the output side (one matmul to ``k·k·F`` channels, then ``k·k`` shifted adds:
9 channels instead of 288), a third row: the same form with autodiff's
gradient, the one flaxae's hand-written gradient replaced. Times are medians
of jitted calls; the backward pass takes the gradient of parameters and input.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from flaxae import io
from flaxae.models.layers import Conv, ConvTranspose


class OutputSideConv(nn.Module):
  """A stride-1 SAME ``k×k`` convolution: ``x @ W → (…, k, k, F)``, shifted and summed.

  Same parameters and function as ``nn.Conv(features, (k, k), padding="SAME")``.
  """

  features: int
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, c, f = self.kernel_size, x.shape[-1], self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, f))
    bias = self.param("bias", nn.initializers.zeros_init(), (f,))
    b, h, w, _ = x.shape
    z = (x @ kernel.transpose(2, 0, 1, 3).reshape(c, k * k * f)).reshape(b, h, w, k, k, f)
    lo = (k - 1) // 2
    zp = jnp.pad(z, ((0, 0), (lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0), (0, 0), (0, 0)))
    y = sum(zp[:, ky:ky + h, kx:kx + w, ky, kx, :] for ky in range(k) for kx in range(k))
    return y + bias.reshape(1, 1, 1, -1)


def layers():
  """(name, input shape, {implementation: module}) for the benchmark conv AE."""
  return [
      ("conv_0 28×28×1 → 14×14×32, stride 2", (28, 28, 1),
       {"flaxae matmul": Conv(32, 3, 2), "nn.Conv": nn.Conv(32, (3, 3), (2, 2))}),
      ("conv_1 14×14×32 → 7×7×64, stride 2", (14, 14, 32),
       {"flaxae matmul": Conv(64, 3, 2), "nn.Conv": nn.Conv(64, (3, 3), (2, 2))}),
      ("deconv_0 7×7×64 → 14×14×64, transposed", (7, 7, 64),
       {"flaxae matmul": ConvTranspose(64, 3, 2),
        "nn.Conv": nn.ConvTranspose(64, (3, 3), (2, 2))}),
      ("deconv_1 14×14×64 → 28×28×32, transposed", (14, 14, 64),
       {"flaxae matmul": ConvTranspose(32, 3, 2),
        "nn.Conv": nn.ConvTranspose(32, (3, 3), (2, 2))}),
      ("logits 28×28×32 → 28×28×1, stride 1", (28, 28, 32),
       {"flaxae matmul": Conv(1, 3, 1), "nn.Conv": nn.Conv(1, (3, 3)),
        "output side, autodiff gradient": OutputSideConv(1)}),
  ]


def median_ms(fn, *args, reps: int = 7) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="per-layer conv timings")
  p.add_argument("--batch-size", type=common.positive_int, default=256)
  p.add_argument("--reps", type=common.positive_int, default=7)
  p.add_argument("--skip-slow", action="store_true",
                 help="skip nn.ConvTranspose's backward (seconds per call on CPU)")
  p.add_argument("--out", default="benchmarks/out/conv_layers.json")
  args = p.parse_args(argv)
  common.output_file(p, args.out)
  rng = np.random.default_rng(0)
  rows = []
  print(f"batch {args.batch_size}; median ms of {args.reps} calls\n")
  print("| layer | implementation | forward ms | forward+backward ms |\n|---|---|---|---|")
  for name, shape, impls in layers():
    x = jnp.asarray(rng.random((args.batch_size, *shape), dtype=np.float32))
    for impl, module in impls.items():
      params = module.init(jax.random.key(0), x)
      ct = jnp.asarray(rng.random(module.apply(params, x).shape, dtype=np.float32))
      fwd = jax.jit(module.apply)
      loss = lambda p, x, m=module, ct=ct: jnp.sum(m.apply(p, x) * ct)
      grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
      fwd_ms = median_ms(fwd, params, x, reps=args.reps)
      slow = args.skip_slow and impl == "nn.Conv" and "transposed" in name
      bwd_ms = None if slow else median_ms(grad, params, x, reps=min(args.reps, 3)
                                          if impl == "nn.Conv" else args.reps)
      rows.append({"layer": name, "impl": impl, "forward_ms": fwd_ms,
                   "forward_backward_ms": bwd_ms})
      print(f"| {name} | {impl} | {fwd_ms:.2f} | "
            f"{'skipped' if bwd_ms is None else f'{bwd_ms:.2f}'} |", flush=True)
  io.write_json(args.out, {"batch_size": args.batch_size, "rows": rows})


if __name__ == "__main__":
  main()
