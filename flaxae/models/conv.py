"""Convolutional encoder and decoder for images of any H×W×C."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp


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
    k = (self.kernel_size, self.kernel_size)
    for i, ch in enumerate(self.channels):
      x = self.activation(
          nn.Conv(ch, k, strides=(2, 2), padding="SAME", name=f"conv_{i}")(x))
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
    k = (self.kernel_size, self.kernel_size)
    if self.latent_dim:
      z = self.activation(nn.Dense(h * w * self.channels[-1], name="grid")(z))
      z = z.reshape(z.shape[0], h, w, self.channels[-1])
    for i, ch in enumerate(reversed(self.channels)):
      z = self.activation(nn.ConvTranspose(
          ch, k, strides=(2, 2), padding="SAME", name=f"deconv_{i}")(z))
    z = nn.Conv(out_ch, k, padding="SAME", name="logits")(z)
    return z[:, :height, :width, :]
