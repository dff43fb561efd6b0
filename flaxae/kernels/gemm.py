"""Float32 matrix products through MKL on CPU, XLA's own products elsewhere.

``matmul(a, b)`` is ``a @ b`` for 2-D float32 arrays. On the CPU backend it
lowers to flaxae's FFI kernel (:mod:`flaxae.kernels.native`: MKL's sgemm,
split over XLA's thread pool); on any other backend (``lax.platform_dependent``)
to XLA's dot, so a model built with it runs everywhere. Its gradient is two
more such products, with transposes passed to the BLAS instead of copies.
At the dense AE's shapes (batch 256, 784-256-64) MKL's sgemm runs at ≈305
GFLOP/s on this project's 2-core Xeon against ≈235 for XLA:CPU's own.

A custom call has no sharding rule: under ``jax.jit`` with operands split over
several devices XLA's partitioner gathers them onto every device (and such
programs stalled in those all-gathers on CPU devices). Use it per device
(``jax.shard_map``) or on one device; :func:`flaxae.train.parallel.sharded_model`
swaps a model's products back to XLA's for the library's own sharded programs.

``dot_general`` has :func:`jax.lax.dot_general`'s signature for
``flax.linen.Dense(dot_general=...)``: the products a dense layer makes
(float32, contracting the input's last axis with the kernel's first) take
the kernel path, any other falls back to ``lax.dot_general``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flaxae.kernels import native

MATMULS = ("xla", "mkl")


def _check(matmuls: str) -> None:
  if matmuls not in MATMULS:
    raise ValueError(f"matmuls must be one of {MATMULS}, got {matmuls!r}")


def _product(a: jax.Array, b: jax.Array, trans_a: bool, trans_b: bool) -> jax.Array:
  """``op(a) @ op(b)``, ``op`` a transpose where asked."""
  m = a.shape[1] if trans_a else a.shape[0]
  n = b.shape[0] if trans_b else b.shape[1]

  def kernel(a, b):
    call = jax.ffi.ffi_call(native.TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32),
                            vmap_method="sequential")
    return call(a, b, trans_a=trans_a, trans_b=trans_b, parts=np.int64(0))

  def portable(a, b):
    dims = (((0 if trans_a else 1,), (1 if trans_b else 0,)), ((), ()))
    return lax.dot_general(a, b, dims)

  return lax.platform_dependent(a, b, cpu=kernel, default=portable)


@jax.custom_vjp
def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  return _product(a, b, False, False)


def _matmul_fwd(a, b):
  return _product(a, b, False, False), (a, b)


def _matmul_bwd(res, g):
  a, b = res
  return _product(g, b, False, True), _product(a, g, True, False)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` for 2-D float32 ``a (M, K)`` and ``b (K, N)``, through MKL on CPU."""
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
    raise ValueError(f"matmul needs (M, K) @ (K, N), got {a.shape} @ {b.shape}")
  if a.dtype != jnp.float32 or b.dtype != jnp.float32:
    raise ValueError(f"matmul is float32 only, got {a.dtype} @ {b.dtype}")
  native.register()
  return _matmul(a, b)


def product(a: jax.Array, b: jax.Array, matmuls: str = "xla", *, trans_a: bool = False,
            trans_b: bool = False) -> jax.Array:
  """``op(a) @ op(b)`` of ``a (..., K)`` (or 2-D ``(K, M)`` with ``trans_a``) and
  2-D ``b``, by ``matmuls``: ``xla``, or ``mkl`` for float32 operands (others
  take XLA's dot). Not differentiable through the kernel: for hand-written
  gradients (:mod:`flaxae.models.layers`); :func:`matmul` has a gradient."""
  _check(matmuls)
  if trans_a and a.ndim != 2:
    raise ValueError(f"a transposed left operand must be 2-D, got {a.shape}")
  if matmuls == "xla" or a.dtype != jnp.float32 or b.dtype != jnp.float32:
    return (a.T if trans_a else a) @ (b.T if trans_b else b)
  native.register()
  out = _product(a.reshape(-1, a.shape[-1]) if not trans_a else a, b, trans_a, trans_b)
  return out if trans_a else out.reshape(*a.shape[:-1], out.shape[-1])


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """:func:`jax.lax.dot_general`, with a dense layer's float32 products
  (``x (..., K)`` by ``kernel (K, N)``) through :func:`matmul`."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  if (lhs.dtype == jnp.float32 and rhs.dtype == jnp.float32 and rhs.ndim == 2
      and lhs.ndim >= 1 and not lhs_batch and not rhs_batch
      and tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
      and preferred_element_type in (None, jnp.float32)):
    out = matmul(lhs.reshape(-1, lhs.shape[-1]), rhs)
    return out.reshape(*lhs.shape[:-1], rhs.shape[1])
  return lax.dot_general(lhs, rhs, dimension_numbers, precision,
                         preferred_element_type=preferred_element_type)


@functools.cache
def dot_general_for(matmuls: str):
  """``flax.linen.Dense``'s ``dot_general`` for a model's ``matmuls`` setting
  (None: Flax's default, XLA's products)."""
  _check(matmuls)
  return dot_general if matmuls == "mkl" else None
