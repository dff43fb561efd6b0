"""The entropy model of compressed codes, and the range coder around it.

Quantised codes ``q = round(z / step)`` ``(N, D)``: each code dimension ``d``
has its own probability model, a histogram of the training set's quantised
codes with a small pseudo-count and an escape symbol for values it never saw;
:func:`encode_symbols` range-codes ``q`` with
`constriction <https://bamler-lab.github.io/constriction/>`_, dimension by
dimension, escaped values as two 16-bit uniform symbols each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import struct
from typing import Any

import numpy as np

from flaxae import io
from flaxae.errors import ConfigError, DataError, FormatError, ShapeError

_MAX_ALPHABET = 1 << 20
_PSEUDO_COUNT = 0.5
_ESCAPE_COUNT = 0.5
_HALF = 1 << 16


# --- The probability model -------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
  """Per-dimension histograms of quantised codes, the entropy model.

  Attributes:
    step: The quantisation step.
    lo: ``(D,)`` int64, the smallest quantised value of each dimension.
    counts: ``D`` float64 arrays; ``counts[d][k]`` weighs ``q = lo[d] + k``
      and the last entry (``k = K_d``) weighs the escape symbol.
  """

  step: float
  lo: np.ndarray
  counts: tuple[np.ndarray, ...]

  @property
  def code_dim(self) -> int:
    return len(self.lo)

  @property
  def digest(self) -> bytes:
    """First 8 bytes of the sha256 of the model's numbers."""
    h = hashlib.sha256(struct.pack("<dI", self.step, self.code_dim))
    h.update(np.ascontiguousarray(self.lo, "<i8").tobytes())
    for c in self.counts:
      h.update(struct.pack("<I", len(c)))
      h.update(np.ascontiguousarray(c, "<f8").tobytes())
    return h.digest()[:8]

  def bits(self, q: np.ndarray) -> float:
    """Ideal code length in bits of quantised codes ``q`` ``(N, D)`` (no escapes' payload)."""
    total = 0.0
    for d, c in enumerate(self.counts):
      k = np.clip(q[:, d] - self.lo[d], 0, len(c) - 1)
      total -= float(np.sum(np.log2(c[k] / c.sum())))
    return total

  def save(self, path: str | os.PathLike) -> None:
    with io.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, step=np.float64(self.step), lo=self.lo,
                 sizes=np.array([len(c) for c in self.counts], np.int64),
                 counts=np.concatenate(self.counts))

  @classmethod
  def read(cls, path: str | os.PathLike) -> Codec:
    with np.load(path, allow_pickle=False) as f:
      sizes = f["sizes"]
      counts = tuple(np.split(f["counts"], np.cumsum(sizes)[:-1]))
      return cls(float(f["step"]), f["lo"], counts)


def quantize(z: np.ndarray, step: float) -> np.ndarray:
  """Codes ``(N, ...)`` → integers ``(N, D)``: ``round(z / step)``; a DataError
  when some code is too large for the step (the coder takes 32-bit integers)."""
  z = np.asarray(z)
  q = np.rint(z.reshape(len(z), -1).astype(np.float64) / step)
  if not np.isfinite(q).all():
    raise DataError("the model's codes are NaN or Inf (its parameters or the inputs are "
                    "not finite: did its training diverge?)")
  if q.size and not np.abs(q).max() < 2**31 - 1:
    raise DataError(
        f"codes are too large for the quantisation step {step:g} (|code / step| up to "
        f"{np.abs(q).max():.3g}, beyond 32 bits); use a larger step")
  return q.astype(np.int64)


def dequantize(q: np.ndarray, step: float) -> np.ndarray:
  """Integers ``(N, D)`` → float32 codes ``q * step``."""
  return (np.asarray(q, np.float64) * step).astype(np.float32)


def check_step(step: float) -> float:
  """``step`` as a float, or a ConfigError unless it is a finite number above 0."""
  if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)):
    raise ConfigError(f"the quantisation step must be a number, got {step!r}")
  step = float(step)
  if not math.isfinite(step) or step <= 0:
    raise ConfigError(f"the quantisation step must be positive, got {step}")
  return step


def fit_codec(codes: np.ndarray, step: float) -> Codec:
  """Fits the per-dimension histograms on (training) codes ``(N, ...)``."""
  step = check_step(step)
  q = quantize(codes, step)
  if not len(q):
    raise DataError("cannot fit a probability model on zero codes")
  lo, hi = q.min(axis=0), q.max(axis=0)
  sizes = hi - lo + 1
  if sizes.max() > _MAX_ALPHABET:
    raise ConfigError(
        f"quantisation step {step} is too small for these codes: dimension "
        f"{int(sizes.argmax())} would need {int(sizes.max())} symbols; use a larger step")
  counts = []
  for d in range(q.shape[1]):
    hist = np.bincount(q[:, d] - lo[d], minlength=sizes[d]).astype(np.float64)
    counts.append(np.append(hist + _PSEUDO_COUNT, _ESCAPE_COUNT))
  return Codec(step, lo.astype(np.int64), tuple(counts))


# --- Entropy coding ---------------------------------------------------------


def _constriction() -> Any:
  import constriction  # pylint: disable=import-outside-toplevel
  return constriction


def _models(codec: Codec) -> list[Any]:
  categorical = _constriction().stream.model.Categorical
  return [categorical(c, perfect=False) for c in codec.counts]


def encode_symbols(q: np.ndarray, codec: Codec) -> np.ndarray:
  """Range-codes quantised codes ``(N, D)``; returns the stream as uint32 words."""
  stream = _constriction().stream
  if q.shape[1] != codec.code_dim:
    raise ShapeError(f"codes have {q.shape[1]} dimensions, the codec {codec.code_dim}")
  if len(q) and np.abs(q).max() >= 2**31 - 1:
    raise DataError("codes are too large for the quantisation step (beyond 32 bits)")
  sizes = np.array([len(c) - 1 for c in codec.counts], np.int64)
  k = q - codec.lo[None, :]
  escape = (k < 0) | (k >= sizes[None, :])
  k = np.where(escape, sizes[None, :], k).astype(np.int32)
  encoder = stream.queue.RangeEncoder()
  for d, model in enumerate(_models(codec)):
    encoder.encode(np.ascontiguousarray(k[:, d]), model)
  escaped = (q.T[escape.T] + 2**31).astype(np.uint64)  # Dimension-major order.
  if len(escaped):
    halves = np.stack([escaped >> 16, escaped & (_HALF - 1)], axis=1).reshape(-1)
    encoder.encode(halves.astype(np.int32), stream.model.Uniform(_HALF))
  return np.asarray(encoder.get_compressed(), np.uint32)


def min_bits(codec: Codec) -> float:
  """The fewest bits one example's codes can take: each dimension's most
  probable symbol."""
  return float(sum(-math.log2(c.max() / c.sum()) for c in codec.counts))


def decode_symbols(words: np.ndarray, n: int, codec: Codec) -> np.ndarray:
  """The quantised codes ``(n, D)`` in a stream from :func:`encode_symbols`.

  Raises:
    FormatError: a stream too short for ``n`` examples, or with symbols left.
  """
  # (The coder's probabilities are rounded to 24 bits: a margin of 10 %.)
  if 0.9 * n * min_bits(codec) > 32 * len(words) + 64:
    raise FormatError(
        f"the file is corrupt: its stream of {len(words)} words cannot hold {n} examples")
  stream = _constriction().stream
  decoder = stream.queue.RangeDecoder(np.ascontiguousarray(words, np.uint32))
  sizes = np.array([len(c) - 1 for c in codec.counts], np.int64)
  k = np.empty((n, codec.code_dim), np.int64)
  for d, model in enumerate(_models(codec)):
    k[:, d] = decoder.decode(model, n)
  escape = k == sizes[None, :]
  q = k + codec.lo[None, :]
  count = int(escape.sum())
  if count:
    halves = np.asarray(decoder.decode(stream.model.Uniform(_HALF), 2 * count), np.int64)
    values = (halves[0::2] << 16) + halves[1::2] - 2**31
    qt = q.T.copy()
    qt[escape.T] = values
    q = qt.T
  if not decoder.maybe_exhausted():
    raise FormatError(f"the file is corrupt: its stream holds more than {n} examples")
  return np.ascontiguousarray(q)
