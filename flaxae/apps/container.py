"""The compressed file: a fixed header, the range-coded stream, a checksum.

Format, version 1 (little-endian)::

  offset  size   field
  0       4      magic b"FXAE"
  4       1      format version (1)
  5       1      dtype of the restored array: 0 uint8, 1 float32
  6       1      ndim of the input array
  7       1      reserved (0)
  8       8      model identity: the config fingerprint (16 hex digits, as bytes)
  16      8      weights digest: sha256 of the parameters, first 8 bytes
  24      8      codec digest: sha256 of the probability model, first 8 bytes
  32      8      quantisation step (float64)
  40      4      code dimensions D per example (uint32)
  44      4      W, length of the range-coded stream in 32-bit words (uint32)
  48      4·ndim the input array's shape (uint32 each)
  ...     4·W    the stream: for d = 0..D-1, the N symbols of dimension d
                 (categorical, alphabet K_d + 1, the last symbol an escape);
                 then, per escape in that order, the value q + 2^31 as two
                 16-bit uniform symbols (high, low)
  end-4   4      CRC-32 of every byte before it
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib

import numpy as np

from flaxae.errors import FormatError

MAGIC = b"FXAE"
FORMAT_VERSION = 1

_FIXED = struct.Struct("<4sBBBB8s8s8sdII")
_CRC = struct.Struct("<I")
_DTYPES = {0: np.dtype(np.uint8), 1: np.dtype(np.float32)}
TRAILER_BYTES = _CRC.size  # The checksum after the stream.


@dataclasses.dataclass(frozen=True)
class Header:
  """The fixed part of a compressed file (see the module docstring)."""

  version: int
  dtype: np.dtype
  shape: tuple[int, ...]
  fingerprint: str
  weights: bytes
  codec: bytes
  step: float
  code_dim: int
  words: int

  @property
  def size(self) -> int:
    """Header bytes: fixed part and shape."""
    return _FIXED.size + 4 * len(self.shape)


def pack(header: Header, words: np.ndarray) -> bytes:
  """The file's bytes: ``header`` (fixed part, then the shape) and the entropy
  coder's 32-bit ``words``; :func:`unpack` reads them back."""
  dtype_code = {v: k for k, v in _DTYPES.items()}[header.dtype]
  head = _FIXED.pack(MAGIC, header.version, dtype_code, len(header.shape), 0,
                     bytes.fromhex(header.fingerprint), header.weights, header.codec,
                     header.step, header.code_dim, len(words))
  body = head + struct.pack(f"<{len(header.shape)}I", *header.shape)
  body += np.ascontiguousarray(words, "<u4").tobytes()
  return body + _CRC.pack(zlib.crc32(body))


def read_header(blob: bytes, name: str = "the file") -> tuple[Header, np.ndarray]:
  """Checks a compressed file's magic, version, length and checksum.

  Returns:
    The header and the stream's uint32 words.

  Raises:
    FormatError: wrong magic, unknown version, truncated, or corrupt.
  """
  if blob[:len(MAGIC)] != MAGIC:
    if len(blob) < len(MAGIC) and MAGIC.startswith(blob):
      raise FormatError(f"{name} is truncated ({len(blob)} bytes)")
    raise FormatError(
        f"{name} is not a flaxae compressed file (magic {blob[:4]!r}, expected "
        f"{MAGIC!r})")
  if len(blob) < _FIXED.size + _CRC.size:
    raise FormatError(f"{name} is truncated ({len(blob)} bytes, shorter than a header)")
  (_, version, dtype_code, ndim, _, fp, weights, codec, step, code_dim,
   words) = _FIXED.unpack_from(blob)
  if version != FORMAT_VERSION:
    raise FormatError(
        f"{name} has format version {version}; this flaxae reads version "
        f"{FORMAT_VERSION}")
  expected = _FIXED.size + 4 * ndim + 4 * words + _CRC.size
  if len(blob) < expected:
    raise FormatError(
        f"{name} is truncated ({len(blob)} bytes; its header says {expected})")
  if len(blob) > expected:
    raise FormatError(
        f"{name} is corrupt: {len(blob) - expected} bytes after its end "
        f"(header says {expected} bytes)")
  (crc,) = _CRC.unpack_from(blob, expected - _CRC.size)
  if zlib.crc32(blob[:expected - _CRC.size]) != crc:
    raise FormatError(f"{name} is corrupt (checksum mismatch)")
  if dtype_code not in _DTYPES or ndim == 0:
    raise FormatError(f"{name} is corrupt (dtype code {dtype_code}, {ndim} dimensions)")
  shape = struct.unpack_from(f"<{ndim}I", blob, _FIXED.size)
  if not (math.isfinite(step) and step > 0) or 0 in shape or code_dim == 0:
    raise FormatError(f"{name} is corrupt (quantisation step {step}, shape {shape}, "
                      f"{code_dim} code dimensions)")
  start = _FIXED.size + 4 * ndim
  stream = np.frombuffer(blob, "<u4", count=words, offset=start).astype(np.uint32)
  return Header(version, _DTYPES[dtype_code], tuple(shape), fp.hex(), weights, codec,
                step, code_dim, words), stream
