"""Resident training sets as bytes: a quarter of float32's memory per device.

Images that came as uint8 (MNIST, Fashion-MNIST, most image files) normalise to
the float32 values ``k / 255``. Kept on the devices as the bytes ``k``, the
training set takes a quarter of the memory on every device that holds a replica,
and each batch gather moves a quarter of the bytes; the compiled step turns a
batch back into exactly the float32 values the host's normalisation gives
(:func:`decode`). Importing this module needs numpy only.
"""

from __future__ import annotations

import numpy as np

from flaxae.data.dataset import normalize

_BLOCK = 4096  # Examples checked at a time (bounds the temporary copies).


def byte_values() -> np.ndarray:
  """The float32 example value of each byte 0…255, as :func:`normalize` makes it."""
  return normalize(np.arange(256, dtype=np.uint8).reshape(1, 256), "bytes")[0]


def to_bytes(x: np.ndarray) -> np.ndarray | None:
  """The uint8 array that :func:`byte_values` maps to ``x`` bit for bit, or
  None when some value of ``x`` is no byte's value (say digits in 1/16ths)."""
  x = np.asarray(x)
  if x.dtype != np.float32 or x.size == 0:
    return None
  out = np.empty(x.shape, np.uint8)
  rows_in, rows_out = x.reshape(len(x), -1), out.reshape(len(out), -1)
  for i in range(0, len(x), _BLOCK):
    block = rows_in[i:i + _BLOCK]
    q = np.rint(block * np.float32(255.0))
    if q.min() < 0 or q.max() > 255:
      return None
    q = q.astype(np.uint8)
    # As normalize turns a byte into its value (bit for bit; -0.0 is no byte's).
    value = q.astype(np.float32) / np.float32(255.0)
    if not np.array_equal(value.view(np.uint32), block.view(np.uint32)):
      return None
    rows_out[i:i + _BLOCK] = q
  return out


def decode(x):
  """Bytes → their float32 values (:func:`byte_values`) in compiled JAX code,
  bit for bit; anything else passes through.

  ``k / 255`` is ``m·2⁻¹⁶·(1 + 2⁻¹⁶ + 2⁻³² + …)`` with ``m = 257·k`` (exact in
  float32): three exact products summed smallest first round to the correctly
  rounded quotient for every byte (tested exhaustively). XLA compiles a
  division by 255 as a multiplication by 1/255, wrong for half the bytes; a
  lookup in the 256 values is exact too but costs a gather per element (the
  dense AE's step: -5 %).
  """
  # Imported here: importing this module needs numpy only.
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  if x.dtype != jnp.uint8:
    return x
  m = x.astype(jnp.float32) * jnp.float32(257)
  return m * jnp.float32(2.0**-16) + (m * jnp.float32(2.0**-32) + m * jnp.float32(2.0**-48))


def compact(x: np.ndarray) -> np.ndarray:
  """``x`` as bytes when that loses nothing (:func:`to_bytes`), else ``x``."""
  packed = to_bytes(x)
  return x if packed is None else packed
