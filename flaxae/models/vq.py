"""The vector-quantised autoencoder's model: encoder, codebook, decoder.

The losses (commitment, codebook) and the codebook's moving-average updates
and restarts live in :mod:`flaxae.objectives.vq`; this module only quantises.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxae.models.autoencoder import Autoencoder

VQ_COLLECTION = "vq"
# Laplace smoothing of the moving-average usage. The usage is kept as a share
# of assignments (it sums to about 1), not as counts as in Sonnet's
# VectorQuantizerEMA (epsilon 1e-5 on counts of 10^3-10^4 assignments per
# batch): 1e-9 on shares is that smoothing for batches of 10^4 assignments. It
# only keeps a code whose usage decayed to nothing finite; a code used at all
# sits at its centroid (a share of 1e-4 within 1e-5 of it).
EMA_EPS = 1e-9


def ema_codebook(count: jnp.ndarray, total: jnp.ndarray) -> jnp.ndarray:
  """Code vectors ``(K, D)`` from moving-average usage ``(K,)`` and sums ``(K, D)``.

  ``count`` is the share of assignments (it sums to about 1); Laplace
  smoothing keeps unused codes finite.
  """
  n = jnp.sum(count)
  k = count.shape[0]
  smoothed = (count + EMA_EPS) / (n + k * EMA_EPS) * n
  return total / smoothed[:, None]


class VectorQuantizer(nn.Module):
  """Nearest-neighbour lookup in a codebook of ``codebook_size`` vectors.

  Maps ``(..., dim)`` vectors to the nearest code vectors ``(..., dim)`` and
  their indices ``(...)``. With ``ema`` the codebook is kept as moving
  averages in the ``"vq"`` collection (``count`` ``(K,)``, ``sum`` ``(K, D)``),
  otherwise it is the parameter ``codebook``.

  Attributes:
    codebook_size: K.
    dim: D, the size of each vector.
    ema: Keep the codebook as moving averages instead of parameters.
  """

  codebook_size: int
  dim: int
  ema: bool = True

  def setup(self):
    k, d = self.codebook_size, self.dim
    init = nn.initializers.normal(1.0)
    if self.ema:
      self.count = self.variable(VQ_COLLECTION, "count", lambda: jnp.full((k,), 1.0 / k))
      self.total = self.variable(
          VQ_COLLECTION, "sum",
          lambda: init(self.make_rng("params"), (k, d), jnp.float32) / k)
    else:
      self.embedding = self.param("codebook", init, (k, d), jnp.float32)

  def codebook(self) -> jnp.ndarray:
    """The ``(K, D)`` code vectors."""
    if self.ema:
      return ema_codebook(self.count.value, self.total.value)
    return self.embedding

  def __call__(self, z: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    codebook = self.codebook()
    flat = z.reshape(-1, self.dim)
    dist = (jnp.sum(jnp.square(flat), axis=-1, keepdims=True) - 2.0 * flat @ codebook.T
            + jnp.sum(jnp.square(codebook), axis=-1)[None, :])
    idx = jnp.argmin(dist, axis=-1)
    return codebook[idx].reshape(z.shape), idx.reshape(z.shape[:-1])


class VQOutput(NamedTuple):
  """One forward pass of :class:`VQAutoencoder`.

  Attributes:
    logits: ``(B, *feature_shape)`` reconstruction logits.
    z_e: ``(B, ..., G, D)`` encoder outputs, cut into ``G`` vectors of size ``D``.
    z_q: Their code vectors, same shape.
    idx: ``(B, ..., G)`` code indices.
  """

  logits: jnp.ndarray
  z_e: jnp.ndarray
  z_q: jnp.ndarray
  idx: jnp.ndarray


class VQAutoencoder(Autoencoder):
  """Encoder, vector quantiser and decoder (VQ-VAE).

  The code's last axis is cut into vectors of ``codebook_dim`` (0: the whole
  axis), each replaced by its nearest code vector; the decoder sees them
  through the straight-through estimator (its gradient reaches the encoder
  as if quantisation were the identity). ``encode`` returns the quantised code
  (continuous vectors, the shape of the encoder's code), so ``decode(encode(x))``
  is the reconstruction; ``indices`` returns the integer codes.

  Attributes:
    codebook_size: K, the number of code vectors.
    codebook_dim: Size of each quantised vector (0: the code's last axis).
    vq_ema: Keep the codebook as moving averages (``"vq"`` collection).
  """

  codebook_size: int = 128
  codebook_dim: int = 0
  vq_ema: bool = True

  @property
  def vector_dim(self) -> int:
    return self.codebook_dim or self.code_shape[-1]

  def setup(self):
    self.encoder = self._encoder()
    self.quantizer = VectorQuantizer(self.codebook_size, self.vector_dim, self.vq_ema)
    self.decoder = self._decoder()

  def _groups(self, z: jnp.ndarray) -> jnp.ndarray:
    return z.reshape(*z.shape[:-1], z.shape[-1] // self.vector_dim, self.vector_dim)

  def encode_continuous(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """``(B, *feature_shape)`` → the encoder's code ``(B, *code_shape)``, unquantised."""
    return self._encoder_output(x, train)

  def forward(self, x: jnp.ndarray, train: bool = False) -> VQOutput:
    """Encodes, quantises (straight-through) and decodes ``x``."""
    z = self.encode_continuous(x, train)
    z_e = self._groups(z)
    z_q, idx = self.quantizer(z_e)
    z_st = z_e + jax.lax.stop_gradient(z_q - z_e)
    logits = self.decode(z_st.reshape(z.shape), train)
    return VQOutput(logits, z_e, z_q, idx)

  def encode(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """The quantised code ``(B, *code_shape)``."""
    z = self.encode_continuous(x, train)
    return self.quantizer(self._groups(z))[0].reshape(z.shape)

  def indices(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Integer codes ``(B, ..., G)``: ``G`` per example (or grid position)."""
    return self.quantizer(self._groups(self.encode_continuous(x, train)))[1]

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Reconstruction logits of ``x`` through the quantised code."""
    return self.forward(x, train).logits
