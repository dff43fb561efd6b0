"""Convolutions written as matrix multiplications.

XLA's CPU backend runs some convolution gradients (strided convolutions and
transposed convolutions in particular) as naive loops: a small conv
autoencoder trained at ~30 samples/s inside ``lax.scan`` on 2 cores. These
layers compute the *same function with the same parameters* as
``flax.linen.Conv`` / ``flax.linen.ConvTranspose`` (kernel ``(kh, kw, in,
out)``, SAME padding) but as patch extraction plus one matmul (im2col), and
the transposed convolution as a sub-pixel convolution (one matmul producing
all ``s×s`` output phases, then depth-to-space). Their gradients are matmuls,
pads and slices, which every backend runs well. ``tests/models`` checks them
against the Flax layers.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
  """Low/high padding of a SAME convolution (as ``lax.padtype_to_pads``)."""
  out = math.ceil(size / s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _transpose_pad_lo(k: int, s: int) -> int:
  """Low padding of the dilated input in a SAME transposed convolution (as
  ``lax._conv_transpose_padding``)."""
  pad_len = k + s - 2
  return k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))


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


class Conv(nn.Module):
  """``nn.Conv(features, (k, k), strides=(s, s), padding="SAME")`` as a matmul."""

  features: int
  kernel_size: int = 3
  strides: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, c, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    patches = im2col(x, k, self.strides)
    return patches @ kernel.reshape(k * k * c, self.features).astype(x.dtype) + bias.reshape(1, 1, 1, -1)


def _subpixel_taps(k: int, s: int) -> tuple[list[int], np.ndarray]:
  """Input offsets ``d`` and a 0/1 map ``sel[d_idx, phase, tap]`` for one axis.

  Output ``o = s·q + p`` of a SAME transposed convolution reads input
  ``q + d`` through tap ``t`` when ``(p + t - pad_lo) = s·d``.
  """
  pad_lo = _transpose_pad_lo(k, s)
  pairs = [(p, t, (p + t - pad_lo) // s) for p in range(s) for t in range(k)
           if (p + t - pad_lo) % s == 0]
  offsets = sorted({d for _, _, d in pairs})
  sel = np.zeros((len(offsets), s, k), np.float32)
  for p, t, d in pairs:
    sel[offsets.index(d), p, t] = 1.0
  return offsets, sel


class ConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME")``
  as a sub-pixel convolution: one matmul gives every output phase."""

  features: int
  kernel_size: int = 3
  strides: int = 2

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, s, c, f = self.kernel_size, self.strides, x.shape[-1], self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, f),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (f,), jnp.float32)
    offsets, sel = _subpixel_taps(k, s)
    n = len(offsets)
    # W[dy, dx, c, py, px, f] = Σ_taps sel[dy, py, ty] sel[dx, px, tx] kernel[ty, tx, c, f]
    weight = jnp.einsum("ayt,bxu,tucf->abcyxf", sel, sel, kernel)
    weight = weight.reshape(n * n * c, s * s * f).astype(x.dtype)
    b, h, w, _ = x.shape
    lo, hi = max(0, -offsets[0]), max(0, offsets[-1])
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    cols = [xp[:, lo + dy:lo + dy + h, lo + dx:lo + dx + w, :]
            for dy in offsets for dx in offsets]
    y = jnp.concatenate(cols, axis=-1) @ weight  # (B, H, W, s·s·F)
    y = y.reshape(b, h, w, s, s, f).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * s, w * s, f) + bias.reshape(1, 1, 1, -1)
