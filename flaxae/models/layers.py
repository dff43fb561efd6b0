"""Convolutions written as matrix multiplications.

XLA's CPU backend runs some convolution gradients (strided convolutions and
transposed convolutions in particular) as naive loops: a small conv
autoencoder trained at ~30 samples/s inside ``lax.scan`` on 2 cores. These
layers compute the *same function with the same parameters* as
``flax.linen.Conv`` / ``flax.linen.ConvTranspose`` (kernel ``(kh, kw, in,
out)``, SAME padding) as matmuls plus pads, slices and adds, whose gradients
are the same kinds of op, which every backend runs well. ``tests/models``
checks them against the Flax layers.

Two forms, chosen by which moves less memory (the matmuls are the same):

* **input side** (im2col): gather the ``k·k`` shifted inputs of every output
  pixel into one ``k·k·C``-wide patch, then one matmul to ``F`` channels.
* **output side**: one matmul of every input pixel to ``k·k·F`` channels
  (its contribution through each tap), then ``k·k`` shifted adds. Only
  ``F·k²`` wide: 9 channels instead of 288 for a 32→1 logits layer, ~25× less
  traffic than its patches. The transposed convolution always uses it: each
  output phase (``o = s·q + p``) is a sum of the few taps that reach it, so no
  zero taps are multiplied and no dilated input is formed.

The output-side forms have hand-written gradients (``jax.custom_vjp``): the
gradient of the tap products is a gather of the output gradient (one slice
per tap, concatenated), then one matmul each for the input and the kernel.
Autodiff's version (a sum of ``k·k`` zero-padded copies) was fused by XLA on
CPU into a transposed copy that took most of the conv AE's step.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxae import kernels


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
  """Low/high padding of a SAME convolution (as ``lax.padtype_to_pads``)."""
  out = math.ceil(size / s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _transpose_pad_lo(k: int, s: int) -> int:
  """Low padding of the dilated input in a SAME transposed convolution (as
  ``lax._conv_transpose_padding``)."""
  pad_len = k + s - 2
  return k - 1 if s > k - 1 else math.ceil(pad_len / 2)


def im2col(x: jnp.ndarray, k: int, s: int) -> jnp.ndarray:
  """``(B, H, W, C)`` → ``(B, ceil(H/s), ceil(W/s), k·k·C)`` SAME patches.

  The last axis is ordered ``(ky, kx, c)``, matching a ``(k, k, C, F)`` kernel
  reshaped to ``(k·k·C, F)``.
  """
  _, h, w, _ = x.shape
  (pt, pb), (pl, pr) = _same_pads(h, k, s), _same_pads(w, k, s)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = math.ceil(h / s), math.ceil(w / s)
  cols = [x[:, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s, :]
          for ky in range(k) for kx in range(k)]
  return jnp.concatenate(cols, axis=-1)


def tap_products(x: jnp.ndarray, kernel: jnp.ndarray, matmuls: str = "xla") -> jnp.ndarray:
  """``(B, H, W, C)`` and ``(k, k, C, F)`` → ``(B, H, W, k, k, F)``: each input
  pixel times each tap (one matmul, ``C`` → ``k·k·F``, by ``matmuls``:
  :func:`flaxae.kernels.product`)."""
  k, _, _, f = kernel.shape
  b, h, w, _ = x.shape
  return kernels.product(x, _weight_matrix(kernel, x.dtype), matmuls).reshape(b, h, w, k, k, f)


def _weight_matrix(kernel: jnp.ndarray, dtype) -> jnp.ndarray:
  """``(k, k, C, F)`` → ``(C, k·k·F)``, columns ordered ``(ky, kx, f)``."""
  k, _, c, f = kernel.shape
  return kernel.transpose(2, 0, 1, 3).reshape(c, k * k * f).astype(dtype)


def _input_grad(dz: jnp.ndarray, kernel: jnp.ndarray, x: jnp.ndarray,
                matmuls: str) -> jnp.ndarray:
  """Gradient of the input ``x`` from that of its tap products ``(B·H·W, k·k·F)``."""
  w = _weight_matrix(kernel, x.dtype)
  return kernels.product(dz, w, matmuls, trans_b=True).reshape(x.shape)


def _kernel_grad(x: jnp.ndarray, dz: jnp.ndarray, kernel: jnp.ndarray,
                 matmuls: str) -> jnp.ndarray:
  """Gradient of the kernel from the input ``(B, H, W, C)`` and the gradient
  of its tap products ``(B·H·W, k·k·F)``."""
  k, _, c, f = kernel.shape
  dw = kernels.product(x.reshape(-1, c), dz, matmuls, trans_a=True)
  return dw.reshape(c, k, k, f).transpose(1, 2, 0, 3).astype(kernel.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def output_side_conv(x: jnp.ndarray, kernel: jnp.ndarray, s: int,
                     matmuls: str = "xla") -> jnp.ndarray:
  """A SAME ``k×k`` convolution with stride ``s`` as :func:`tap_products`
  plus ``k·k`` shifted (strided) adds: ``y[o] = Σ_t z[s·o + t − pad, t]``;
  its products by ``matmuls``."""
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  (pt, pb), (pl, pr) = _same_pads(h, k, s), _same_pads(w, k, s)
  z = jnp.pad(tap_products(x, kernel, matmuls),
              ((0, 0), (pt, pb), (pl, pr), (0, 0), (0, 0), (0, 0)))
  ho, wo = math.ceil(h / s), math.ceil(w / s)
  return sum(z[:, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s, ky, kx, :]
             for ky in range(k) for kx in range(k))


def _output_side_conv_fwd(x, kernel, s, matmuls):
  return output_side_conv(x, kernel, s, matmuls), (x, kernel)


def _output_side_conv_bwd(s, matmuls, res, g):
  # By hand, as a gather: see _conv_transpose_bwd. Tap t of input pixel i fed
  # output (i + pad − t) / s: dilate g by s, pad it so that slot i + k − 1 − t
  # holds that output, and take one slice per tap.
  x, kernel = res
  k, _, c, f = kernel.shape
  b, h, w, _ = x.shape
  (pt, _), (pl, _) = _same_pads(h, k, s), _same_pads(w, k, s)

  def pads(size, pad_lo, out):
    lo = k - 1 - pad_lo
    return lo, size + k - 1 - lo - (s * (out - 1) + 1), s - 1

  zero = jnp.zeros((), g.dtype)
  g = jax.lax.pad(g, zero, ((0, 0, 0), pads(h, pt, g.shape[1]), pads(w, pl, g.shape[2]),
                            (0, 0, 0)))
  dz = jnp.concatenate([g[:, k - 1 - ty:k - 1 - ty + h, k - 1 - tx:k - 1 - tx + w, :]
                        for ty in range(k) for tx in range(k)], axis=-1)
  dz = dz.reshape(b * h * w, k * k * f)
  return _input_grad(dz, kernel, x, matmuls), _kernel_grad(x, dz, kernel, matmuls)


output_side_conv.defvjp(_output_side_conv_fwd, _output_side_conv_bwd)


class Conv(nn.Module):
  """``nn.Conv(features, (k, k), strides=(s, s), padding="SAME")`` as a matmul.

  Input side (im2col, ``k·k·C`` per output pixel) or output side (``k·k·F``
  per input pixel), whichever moves less: output side when ``F·s² < C``.
  ``matmuls``: who computes the products (:mod:`flaxae.kernels`).
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  matmuls: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, s, c, f = self.kernel_size, self.strides, x.shape[-1], self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, f),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (f,), jnp.float32)
    if f * s * s < c:
      y = output_side_conv(x, kernel, s, self.matmuls)
    else:
      y = kernels.product(im2col(x, k, s), kernel.reshape(k * k * c, f).astype(x.dtype),
                          self.matmuls)
    return y + bias.reshape(1, 1, 1, -1).astype(y.dtype)


def phase_taps(k: int, s: int) -> list[list[tuple[int, int]]]:
  """For each output phase ``p`` of one axis, the ``(d, t)`` pairs that reach it.

  Output ``o = s·q + p`` of a SAME transposed convolution reads input
  ``q + d`` through tap ``t`` when ``p + t − pad_lo = s·d``.
  """
  pad_lo = _transpose_pad_lo(k, s)
  return [[((p + t - pad_lo) // s, t) for t in range(k) if (p + t - pad_lo) % s == 0]
          for p in range(s)]


def _shifted(x: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
  """``out[:, i, j] = x[:, i + dy, j + dx]``, zero outside ``x``: a slice and a
  pad, which XLA fuses into the consumer (no padded copy of ``x``)."""
  h, w = x.shape[1:3]
  if abs(dy) >= h or abs(dx) >= w:  # A tap wider than the map: nothing of x lands.
    return jnp.zeros_like(x)
  x = x[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
  pads = [(0, 0), (max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0))]
  return jnp.pad(x, pads + [(0, 0)] * (x.ndim - 3))


def _overlap_add(z: jnp.ndarray, s: int) -> jnp.ndarray:
  """``(B, H, W, k, k, F)`` tap products → ``(B, H, s, W, s, F)`` output phases."""
  b, h, w, k, _, f = z.shape
  taps = phase_taps(k, s)

  def phase(ty_taps, tx_taps):
    parts = [_shifted(z[:, :, :, ty, tx, :], dy, dx)
             for dy, ty in ty_taps for dx, tx in tx_taps]
    return sum(parts) if parts else jnp.zeros((b, h, w, f), z.dtype)

  return jnp.stack([jnp.stack([phase(ty_taps, tx_taps) for tx_taps in taps], axis=3)
                    for ty_taps in taps], axis=2)


def _gather_taps(dy: jnp.ndarray, k: int) -> jnp.ndarray:
  """The transpose of :func:`_overlap_add`: ``(B, H, s, W, s, F)`` →
  ``(B, H, W, k·k·F)``, each tap's slot the output pixel it fed."""
  b, h, s, w, _, f = dy.shape
  taps = phase_taps(k, s)
  where = {t: (p, d) for p, phase in enumerate(taps) for d, t in phase}
  cols = []
  for ty in range(k):
    for tx in range(k):
      if ty not in where or tx not in where:
        cols.append(jnp.zeros((b, h, w, f), dy.dtype))
        continue
      (py, dy_), (px, dx_) = where[ty], where[tx]
      cols.append(_shifted(dy[:, :, py, :, px, :], -dy_, -dx_))
  return jnp.concatenate(cols, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose(x: jnp.ndarray, kernel: jnp.ndarray, s: int,
                   matmuls: str = "xla") -> jnp.ndarray:
  """SAME transposed convolution of ``(B, H, W, C)`` by ``(k, k, C, F)``:
  ``(B, H·s, W·s, F)``, on the output side; its products by ``matmuls``."""
  b, h, w, _ = x.shape
  f = kernel.shape[-1]
  return _overlap_add(tap_products(x, kernel, matmuls), s).reshape(b, h * s, w * s, f)


def _conv_transpose_fwd(x, kernel, s, matmuls):
  return conv_transpose(x, kernel, s, matmuls), (x, kernel)


def _conv_transpose_bwd(s, matmuls, res, g):
  # Written by hand: autodiff's gradient of the slices is a sum of k·k padded
  # copies, which XLA on CPU fused into the transposed copy feeding the weight
  # gradient's matmul (≈40× slower than this gather).
  x, kernel = res
  k, _, c, f = kernel.shape
  b, h, w, _ = x.shape
  dz = _gather_taps(g.reshape(b, h, s, w, s, f), k).reshape(b * h * w, k * k * f)
  return _input_grad(dz, kernel, x, matmuls), _kernel_grad(x, dz, kernel, matmuls)


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class ConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME")``
  on the output side: one matmul gives every input pixel's contribution
  through every tap, and each of the ``s×s`` output phases adds the taps that
  reach it (then depth-to-space)."""

  features: int
  kernel_size: int = 3
  strides: int = 2
  matmuls: str = "xla"  # Who computes the products (:mod:`flaxae.kernels`).

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, s, c, f = self.kernel_size, self.strides, x.shape[-1], self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, f),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (f,), jnp.float32)
    y = conv_transpose(x, kernel, s, self.matmuls)
    return y + bias.reshape(1, 1, 1, -1).astype(y.dtype)
