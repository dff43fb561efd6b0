"""Lossy compression to real bytes: quantised codes, entropy-coded.

An image becomes its code ``z = encode(x)``, quantised to integers
``q = round(z / step)``; each code dimension ``d`` has its own probability
model, a histogram of the training set's quantised codes (with a small
pseudo-count and an escape symbol for values it never saw), and the integers
are range-coded with `constriction <https://bamler-lab.github.io/constriction/>`_.
Decompression decodes ``q`` and returns ``decode(q * step)``: exactly what the
model makes of the quantised codes.

The probability model of a run and a step is fitted once on the run's
training data and kept in ``RUN_DIR/codecs/``; the file names it by digest.

File format, version 1 (little-endian)::

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

>>> run = flaxae.load("runs/fashion")
>>> blob = compress(run, images, step=0.5)
>>> restored = decompress(run, blob)          # == run.decode(q * 0.5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxae import io
from flaxae.api import Run, load
from flaxae.apps import arrays
from flaxae.config import fingerprint
from flaxae.data import load_dataset
from flaxae.errors import ConfigError, DataError, FormatError, OutputError, ShapeError

MAGIC = b"FXAE"
FORMAT_VERSION = 1
DEFAULT_STEP = 0.5
CODEC_DIR = "codecs"

_FIXED = struct.Struct("<4sBBBB8s8s8sdII")
_CRC = struct.Struct("<I")
_DTYPES = {0: np.dtype(np.uint8), 1: np.dtype(np.float32)}
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
  """Codes ``(N, ...)`` → integers ``(N, D)``: ``round(z / step)``."""
  z = np.asarray(z)
  return np.rint(z.reshape(len(z), -1).astype(np.float64) / step).astype(np.int64)


def dequantize(q: np.ndarray, step: float) -> np.ndarray:
  """Integers ``(N, D)`` → float32 codes ``q * step``."""
  return (np.asarray(q, np.float64) * step).astype(np.float32)


def _check_step(step: float) -> float:
  step = float(step)
  if not math.isfinite(step) or step <= 0:
    raise ConfigError(f"the quantisation step must be positive, got {step}")
  return step


def fit_codec(codes: np.ndarray, step: float) -> Codec:
  """Fits the per-dimension histograms on (training) codes ``(N, ...)``."""
  step = _check_step(step)
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


def weights_digest(run: Run) -> bytes:
  """First 8 bytes of the sha256 of the run's parameters and model state."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(run.variables):
    a = np.asarray(leaf)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.digest()[:8]


def codec_path(run: Run, step: float) -> Path:
  return run.dir / CODEC_DIR / f"{weights_digest(run).hex()}-step{float(step)!r}.npz"


def get_codec(run: Run, step: float) -> Codec:
  """The run's probability model for ``step``: read from ``RUN_DIR/codecs``, or
  fitted on the codes of the run's training data and saved there (if it can be)."""
  step = _check_step(step)
  path = codec_path(run, step)
  if path.exists():
    try:
      return Codec.read(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
      pass  # A broken cache is refitted and replaced below.
  ds = load_dataset(run.config.data)
  codec = fit_codec(run.encode(ds.train_x), step)
  try:
    io.make_dir(path.parent)
    codec.save(path)
  except OutputError:
    pass  # A read-only run directory: the codec is refitted next time.
  return codec


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


def decode_symbols(words: np.ndarray, n: int, codec: Codec) -> np.ndarray:
  """The quantised codes ``(n, D)`` in a stream from :func:`encode_symbols`."""
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
  return np.ascontiguousarray(q)


# --- The file format --------------------------------------------------------


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


def _pack(header: Header, words: np.ndarray) -> bytes:
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
  start = _FIXED.size + 4 * ndim
  stream = np.frombuffer(blob, "<u4", count=words, offset=start).astype(np.uint32)
  return Header(version, _DTYPES[dtype_code], tuple(shape), fp.hex(), weights, codec,
                step, code_dim, words), stream


def _num_examples(shape: tuple[int, ...], feature_shape: tuple[int, ...]) -> int:
  size = math.prod(feature_shape)
  total = math.prod(shape)
  if size == 0 or total % size or total == 0:
    raise ShapeError(
        f"inputs of shape {shape} do not fit this model, which takes examples of "
        f"shape {feature_shape} ({size} values each)")
  return total // size


def _as_output(images: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
  images = np.asarray(images, np.float32).reshape(shape)
  if dtype == np.uint8:
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
  return images


def compress(run: Run, x: np.ndarray, step: float = DEFAULT_STEP,
             codec: Codec | None = None) -> bytes:
  """The compressed file's bytes for images ``x`` (uint8, or float in [0, 1]).

  Args:
    run: The trained run whose encoder (and decoder, to restore) is used.
    x: Examples ``(N, *feature_shape)`` (or anything of the same size per example).
    step: The quantisation step of the codes.
    codec: The probability model; by default the run's for ``step``.
  """
  x = np.asarray(x)
  step = _check_step(step)
  n = _num_examples(x.shape, run.feature_shape)
  codec = codec or get_codec(run, step)
  q = quantize(run.encode(x), step)
  if q.shape[1] != codec.code_dim:
    raise ShapeError(
        f"the codec has {codec.code_dim} dimensions, this model's code {q.shape[1]}")
  if len(q) != n:
    raise ShapeError(f"{len(q)} codes for {n} examples")
  words = encode_symbols(q, codec)
  header = Header(FORMAT_VERSION, np.dtype(np.uint8 if x.dtype == np.uint8 else np.float32),
                  tuple(int(s) for s in x.shape), fingerprint(run.config),
                  weights_digest(run), codec.digest, step, codec.code_dim, len(words))
  return _pack(header, words)


def check_identity(run: Run, header: Header, name: str = "the file") -> None:
  """Raises :class:`FormatError` unless ``header`` was written by ``run``'s model."""
  mine = fingerprint(run.config)
  if header.fingerprint != mine:
    raise FormatError(
        f"{name} was compressed with another model (config fingerprint "
        f"{header.fingerprint}; the run in {run.dir} has {mine}); decompress it with "
        "the run that made it")
  if header.weights != weights_digest(run):
    raise FormatError(
        f"{name} was compressed with other weights of this model (was {run.dir} "
        "trained further since?); decompress it with the checkpoint that made it")
  code_dim = math.prod(run.model.code_shape)
  if header.code_dim != code_dim:
    raise FormatError(
        f"{name} holds codes of {header.code_dim} dimensions; this model's have {code_dim}")


def decompress(run: Run, blob: bytes, codec: Codec | None = None,
               name: str = "the file") -> np.ndarray:
  """The images a compressed file holds: ``run.decode(q * step)``.

  Returns:
    An array of the compressed input's shape: uint8 if the input was uint8
    (the decoder's output in [0, 1] times 255, rounded), else float32.

  Raises:
    FormatError: the file is not a flaxae file, is truncated or corrupt, or
      was made by another model.
  """
  header, words = read_header(bytes(blob), name)
  check_identity(run, header, name)
  codec = codec or get_codec(run, header.step)
  if codec.digest != header.codec:
    raise FormatError(
        f"{name} was coded with another probability model (codec {header.codec.hex()}, "
        f"the run's is {codec.digest.hex()}); was the training data changed?")
  n = _num_examples(header.shape, run.feature_shape)
  q = decode_symbols(words, n, codec)
  images = run.decode(dequantize(q, header.step).reshape(n, *run.model.code_shape))
  return _as_output(images, header.dtype, header.shape)


# --- Quality figures --------------------------------------------------------


def psnr(x: np.ndarray, y: np.ndarray) -> float:
  """PSNR in dB of ``y`` against ``x``, both in [0, 1], from the mean squared error
  over every value (as ``Run.evaluate``)."""
  mse = float(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))
  return float(10.0 * np.log10(1.0 / max(mse, 1e-12)))


def ssim(x: np.ndarray, y: np.ndarray, feature_shape: tuple[int, ...]) -> float:
  """Mean SSIM over images (scikit-image, data range 1, a 7×7 window or the
  largest odd window that fits); NaN for vectors or images smaller than 3×3."""
  if len(feature_shape) != 3 or min(feature_shape[:2]) < 3:
    return float("nan")
  from skimage.metrics import structural_similarity  # pylint: disable=import-outside-toplevel
  h, w, c = feature_shape
  x = np.asarray(x, np.float64).reshape(-1, h, w, c)
  y = np.asarray(y, np.float64).reshape(-1, h, w, c)
  win = min(7, min(h, w) - (1 - min(h, w) % 2))
  values = [structural_similarity(a, b, data_range=1.0, win_size=win, channel_axis=-1)
            for a, b in zip(x, y)]
  return float(np.mean(values))


def as_unit(x: np.ndarray) -> np.ndarray:
  """uint8 → float in [0, 1]; floats as float64."""
  x = np.asarray(x)
  return x / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class Report:
  """What a compression achieved.

  Attributes:
    examples: Number of examples compressed.
    pixels: Values compressed (examples × values per example).
    file_bytes: Size of the whole file (header, stream, checksum).
    header_bytes: Of which the header and checksum.
    bits_per_pixel: ``8 · file_bytes / pixels``.
    ratio: Raw uint8 size (one byte per value) ÷ ``file_bytes``.
    psnr: dB, restored against original, both in [0, 1].
    ssim: Mean SSIM per image (NaN for vectors).
    step: The quantisation step.
  """

  examples: int
  pixels: int
  file_bytes: int
  header_bytes: int
  bits_per_pixel: float
  ratio: float
  psnr: float
  ssim: float
  step: float

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def report(run: Run, x: np.ndarray, blob: bytes,
           restored: np.ndarray | None = None) -> Report:
  """The figures of ``blob``, the compressed ``x``."""
  header, _ = read_header(blob)
  if restored is None:
    restored = decompress(run, blob)
  n = _num_examples(header.shape, run.feature_shape)
  pixels = n * math.prod(run.feature_shape)
  return Report(
      examples=n, pixels=pixels, file_bytes=len(blob),
      header_bytes=header.size + _CRC.size,
      bits_per_pixel=8.0 * len(blob) / pixels, ratio=pixels / len(blob),
      psnr=psnr(as_unit(x), as_unit(restored)),
      ssim=ssim(as_unit(x), as_unit(restored), run.feature_shape), step=header.step)


def _run(run: Run | str | os.PathLike) -> Run:
  return run if isinstance(run, Run) else load(run)


def compress_file(run: Run | str | os.PathLike, input_path: str | os.PathLike,
                  output_path: str | os.PathLike, step: float = DEFAULT_STEP,
                  overwrite: bool = False) -> Report:
  """Compresses the images in ``input_path`` (``.npy``, ``.npz``, IDX) to
  ``output_path``, atomically; returns the report of what was written."""
  io.check_output(output_path, overwrite)
  step = _check_step(step)
  x = arrays.read_array(input_path)
  run = _run(run)
  blob = compress(run, x, step)
  rep = report(run, x, blob)
  io.write_bytes(output_path, blob, overwrite)
  return rep


def decompress_file(run: Run | str | os.PathLike, input_path: str | os.PathLike,
                    output_path: str | os.PathLike, overwrite: bool = False) -> np.ndarray:
  """Restores a compressed file to ``output_path`` (``.npy`` or IDX), atomically."""
  arrays.check_array_output(output_path, overwrite)
  path = Path(input_path)
  if not path.is_file():
    raise DataError(f"compressed file {path} does not exist")
  blob = path.read_bytes()
  read_header(blob, str(path))  # Format errors before loading the run.
  out = decompress(_run(run), blob, name=str(path))
  arrays.write_array(output_path, out, overwrite)
  return out
