"""IDX files (the MNIST format), gzip-compressed or raw.

An IDX file is a big-endian header, ``0 0 <type> <ndim>`` then ``ndim`` uint32
sizes, followed by the values in C order. Gzip is recognised by its magic bytes,
so the file name does not matter when reading.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from flaxae import io
from flaxae.errors import DataError

# The IDX type byte → numpy dtype as stored on disk (big-endian).
_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
# Native (kind, itemsize) → the IDX type byte.
_CODES = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIM = 2**32 - 1


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (gzip or raw) into a native-endian array of its own shape.

  Args:
    path: The file; gzip is detected from its contents, not from its name.

  Returns:
    A writable array with the dtype and shape the header declares.

  Raises:
    DataError: the file is missing or unreadable, the gzip stream is truncated
      or corrupt, the magic number is wrong, or the header does not match the
      amount of data.
  """
  path = Path(path)
  if not path.exists():
    raise DataError(f"IDX file {path} does not exist")
  if not path.is_file():
    raise DataError(f"IDX file {path} is not a regular file")
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from e
  if raw[:2] == _GZIP_MAGIC:
    try:
      raw = gzip.decompress(raw)
    except EOFError as e:
      raise DataError(f"{path} is a truncated gzip file ({e})") from e
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
      raise DataError(f"{path} is a corrupt gzip file ({e})") from e
  elif path.suffix == ".gz" and raw[:2] != b"\0\0":
    raise DataError(f"{path} is named .gz but is neither gzip nor IDX data")
  return _parse(raw, path)


def _parse(raw: bytes, path: Path) -> np.ndarray:
  """The array an in-memory IDX file holds; ``path`` only names it in errors."""
  if not raw:
    raise DataError(f"{path} is empty, not an IDX file")
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
    raise DataError(
        f"{path} is not an IDX file (bad magic number 0x{raw[:4].hex()}; "
        "expected 0x0000TTNN with a known type byte TT)")
  dtype, ndim = _DTYPES[raw[2]], raw[3]
  header = 4 + 4 * ndim
  if ndim == 0:
    raise DataError(f"{path} has a corrupt IDX header (0 dimensions)")
  if len(raw) < header:
    raise DataError(
        f"{path} has a truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  expected = math.prod(shape) * dtype.itemsize
  if len(raw) - header != expected:
    raise DataError(
        f"{path} holds {len(raw) - header} bytes of data but its IDX header says "
        f"{'x'.join(map(str, shape))} values of {dtype.newbyteorder('=').name} "
        f"({expected} bytes)")
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="))  # A writable, native-endian copy.


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes ``array`` as an IDX file, atomically (temporary file, then rename).

  Args:
    path: The destination; a name ending in ``.gz`` is gzip-compressed.
    array: uint8, int8, int16, int32, float32 or float64; 1 to 255 dimensions.

  Raises:
    DataError: the dtype or shape cannot be stored as IDX.
    OutputError: the folder of ``path`` is missing or not writable.
  """
  array = np.asarray(array)
  code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
  if code is None or array.dtype.kind not in "uif":
    raise DataError(
        f"IDX cannot store dtype {array.dtype} (for {path}); use uint8, int8, "
        "int16, int32, float32 or float64")
  if not 1 <= array.ndim <= 255:
    raise DataError(
        f"IDX stores 1 to 255 dimensions, got shape {array.shape} (for {path})")
  if max(array.shape) > _MAX_DIM:
    raise DataError(f"IDX sizes must fit in 32 bits, got shape {array.shape}")
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  body = header + np.ascontiguousarray(array, _DTYPES[code]).tobytes()
  if str(path).endswith(".gz"):
    body = gzip.compress(body, compresslevel=6, mtime=0)
  io.write_bytes(path, body)


def memmap_idx(path: str | os.PathLike) -> np.ndarray:
  """An uncompressed IDX file as a read-only memory map (nothing is read yet).

  Raises:
    DataError: the file is gzip (which cannot be mapped), or its header does
      not describe its size.
  """
  path = Path(path)
  if not path.is_file():
    raise DataError(f"IDX file {path} does not exist")
  with open(path, "rb") as f:
    head = f.read(4)
    if head[:2] == _GZIP_MAGIC:
      raise DataError(
          f"{path} is gzip-compressed and cannot be streamed; gunzip it first")
    if len(head) < 4 or head[0] or head[1] or head[2] not in _DTYPES or not head[3]:
      raise DataError(f"{path} is not an IDX file (bad magic number 0x{head.hex()})")
    dtype, ndim = _DTYPES[head[2]], head[3]
    dims = f.read(4 * ndim)
  if len(dims) < 4 * ndim:
    raise DataError(f"{path} has a truncated IDX header")
  shape = struct.unpack(f">{ndim}I", dims)
  expected = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize
  if path.stat().st_size != expected:
    raise DataError(
        f"{path} has {path.stat().st_size} bytes but its IDX header says {expected}")
  return np.memmap(path, dtype=dtype, mode="r", offset=4 + 4 * ndim, shape=shape)
