"""Convolutional encoder and decoder for images of any H×W×C.

The layers are :mod:`flaxae.models.layers`' matmul forms of ``nn.Conv`` and
``nn.ConvTranspose`` (same parameters, same function, fast on every backend).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flaxae.models.layers import Conv, ConvTranspose


def downsampled(size: int, levels: int) -> int:
  """Spatial size after ``levels`` stride-2 SAME convolutions."""
  for _ in range(levels):
    size = math.ceil(size / 2)
  return size


class ConvEncoder(nn.Module):
  """Stride-2 convolutions down, then (optionally) a dense code.

  Maps ``(B, H, W, C)`` images to ``(B, latent_dim)`` codes, or to a spatial
  code ``(B, h, w, channels[-1])`` when ``latent_dim`` is 0.
  """

  channels: Sequence[int]
  latent_dim: int
  kernel_size: int = 3
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i, ch in enumerate(self.channels):
      x = self.activation(Conv(ch, self.kernel_size, 2, name=f"conv_{i}")(x))
    if self.latent_dim:
      x = nn.Dense(self.latent_dim, name="code")(x.reshape(x.shape[0], -1))
    return x


class ConvDecoder(nn.Module):
  """Dense to a small grid, stride-2 transposed convolutions up, then logits.

  The output is cropped to ``image_shape`` (the upsampled grid is never smaller).
  """

  channels: Sequence[int]
  image_shape: tuple[int, int, int]
  latent_dim: int
  kernel_size: int = 3
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    height, width, out_ch = self.image_shape
    levels = len(self.channels)
    h, w = downsampled(height, levels), downsampled(width, levels)
    if self.latent_dim:
      z = self.activation(nn.Dense(h * w * self.channels[-1], name="grid")(z))
      z = z.reshape(z.shape[0], h, w, self.channels[-1])
    for i, ch in enumerate(reversed(self.channels)):
      z = self.activation(ConvTranspose(ch, self.kernel_size, 2, name=f"deconv_{i}")(z))
    z = Conv(out_ch, self.kernel_size, 1, name="logits")(z)
    return z[:, :height, :width, :]
