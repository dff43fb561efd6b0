"""Input corruptions: Gaussian, masking and salt-and-pepper noise.

A corruption is written ``name:value``: ``gaussian:0.5`` (add N(0, σ²),
clip to [0, 1]), ``mask:0.5`` (set each value to 0 with probability p) or
``salt_pepper:0.1`` (set each value to 0 or 1, each with probability p/2);
``none`` (or empty) leaves the input as it is.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from flaxae.errors import ConfigError

NOISES = ("gaussian", "mask", "salt_pepper")


class Noise(NamedTuple):
  """A parsed corruption: its ``name`` and its σ or p (``level``)."""

  name: str
  level: float


def parse_noise(spec: str) -> Noise | None:
  """``"gaussian:0.5"`` → ``Noise("gaussian", 0.5)``; ``""`` or ``"none"`` → None."""
  spec = spec.strip()
  if spec in ("", "none"):
    return None
  name, sep, value = spec.partition(":")
  if name not in NOISES or not sep:
    raise ConfigError(
        f"unknown noise {spec!r}; write gaussian:SIGMA, mask:P or salt_pepper:P "
        "(or none)")
  try:
    level = float(value)
  except ValueError as e:
    raise ConfigError(f"noise {spec!r} needs a number after the colon") from e
  if not level >= 0.0 or (name != "gaussian" and level > 1.0):
    bound = "σ must not be negative" if name == "gaussian" else "p must be in [0, 1]"
    raise ConfigError(f"noise {spec!r}: {bound}")
  return Noise(name, level)


def corrupt_example(x: jnp.ndarray, key: jax.Array, noise: Noise | None) -> jnp.ndarray:
  """One example ``x`` (any shape, values in [0, 1]) corrupted with ``key``."""
  if noise is None:
    return x
  if noise.name == "gaussian":
    return jnp.clip(x + noise.level * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)
  if noise.name == "mask":
    return jnp.where(jax.random.bernoulli(key, noise.level, x.shape), 0.0, x)
  hit_key, salt_key = jax.random.split(key)
  hit = jax.random.bernoulli(hit_key, noise.level, x.shape)
  salt = jax.random.bernoulli(salt_key, 0.5, x.shape).astype(x.dtype)
  return jnp.where(hit, salt, x)


def corrupt(x: jnp.ndarray, keys: jax.Array, spec: str) -> jnp.ndarray:
  """A batch ``x`` ``(B, ...)`` corrupted as ``spec`` says, one key per example."""
  noise = parse_noise(spec)
  if noise is None:
    return x
  return jax.vmap(lambda xi, k: corrupt_example(xi, k, noise))(x, keys)
