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
The file format is :mod:`flaxae.apps.container`'s, the entropy model and coder
:mod:`flaxae.apps.codec`'s; this module joins them to a trained run.

>>> run = flaxae.load("runs/fashion")
>>> blob = compress(run, images, step=0.5)
>>> restored = decompress(run, blob)          # == run.decode(q * 0.5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxae import io
from flaxae.api import Run, as_run, count_examples
from flaxae.apps import arrays
from flaxae.apps.codec import (Codec, check_step, decode_symbols, dequantize, encode_symbols,
                               fit_codec, quantize)
from flaxae.apps.container import FORMAT_VERSION, TRAILER_BYTES, Header, pack, read_header
from flaxae.config import fingerprint
from flaxae.data import load_dataset
from flaxae.data.digest import data_digest
from flaxae.errors import ConfigError, DataError, FormatError, OutputError, ShapeError
from flaxae.train.rundir import check_same_data, checkpoint_steps

DEFAULT_STEP = 0.5
CODEC_DIR = "codecs"


# --- The run's probability model, fitted once and cached --------------------


def weights_digest(run: Run) -> bytes:
  """First 8 bytes of the sha256 of the run's parameters and model state."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(run.variables):
    a = np.asarray(leaf)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.digest()[:8]


def codec_path(run: Run, step: float) -> Path:
  """Where the run's probability model for ``step`` is kept: named by the
  model's weights, so a retrained run never reads another model's."""
  return run.dir / CODEC_DIR / f"{weights_digest(run).hex()}-step{float(step)!r}.npz"


def get_codec(run: Run, step: float, expected: bytes | None = None,
              name: str = "the file") -> Codec:
  """The run's probability model for ``step``: read from ``RUN_DIR/codecs``, or
  fitted on the codes of the run's training data and saved there (if it can be).

  Args:
    expected: The digest of the model a file was coded with (decompressing):
      a model fitted anew that differs is refused, not kept.

  Raises:
    FormatError: the model fitted anew is not ``expected``.
  """
  step = check_step(step)
  path = codec_path(run, step)
  if path.exists():
    try:
      return Codec.read(path)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
      pass  # A broken cache is refitted and replaced below.
  ds = load_dataset(run.config.data)
  # A model fitted on other data would be kept under this run's name.
  check_same_data(run.dir, {"data_digest": data_digest(ds.train_x, ds.test_x)},
                  advice="the probability model of its codes is fitted on the run's own "
                  "training data: restore it")
  codec = fit_codec(run.encode(ds.train_x), step)
  if expected is not None and codec.digest != expected:
    raise FormatError(
        f"{name} was coded with a probability model that {path.parent} does not hold, "
        "and the one fitted again on the run's training data differs (other data, or "
        f"codes computed on another kind of device); copy the {CODEC_DIR} folder of the "
        "run directory where the file was made")
  try:
    io.make_dir(path.parent)
    codec.save(path)
  except OutputError:
    pass  # A read-only run directory: the codec is refitted next time.
  return codec


def _num_examples(shape: tuple[int, ...], feature_shape: tuple[int, ...]) -> int:
  n = count_examples(shape, feature_shape, "inputs", "takes examples")
  if n == 0:
    raise DataError(f"no examples to compress (an input of shape {shape})")
  return n


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
  step = check_step(step)
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
  return pack(header, words)


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
        f"{name} was compressed with other weights of this model (another checkpoint "
        f"of {run.dir}: one no longer kept if the run trained on since, or another of "
        "its seeds' models); decompress it with the checkpoint that made it")
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
  if isinstance(blob, (str, os.PathLike)):
    raise ConfigError(f"decompress takes a compressed file's bytes, got the path {blob!r:.80}; "
                      "read it first (Path(...).read_bytes()), or use decompress_file")
  if not isinstance(blob, (bytes, bytearray, memoryview)):
    raise ConfigError(f"decompress takes a compressed file's bytes, got "
                      f"{type(blob).__name__}")
  header, words = read_header(bytes(blob), name)
  check_identity(run, header, name)
  codec = codec or get_codec(run, header.step, expected=header.codec, name=name)
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
    pixels: Pixels compressed: ``examples × H × W`` for images (a colour
      pixel is one pixel, as image codecs count it), ``examples × D`` for
      vectors.
    values: Values compressed: ``pixels`` times the channels.
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
  values: int
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
  shape = run.feature_shape
  values = n * math.prod(shape)
  pixels = n * math.prod(shape[:2]) if len(shape) == 3 else values
  return Report(
      examples=n, pixels=pixels, values=values, file_bytes=len(blob),
      header_bytes=header.size + TRAILER_BYTES,
      bits_per_pixel=8.0 * len(blob) / pixels, ratio=values / len(blob),
      psnr=psnr(as_unit(x), as_unit(restored)),
      ssim=ssim(as_unit(x), as_unit(restored), run.feature_shape), step=header.step)


def compress_file(run: Run | str | os.PathLike, input_path: str | os.PathLike,
                  output_path: str | os.PathLike, step: float = DEFAULT_STEP,
                  overwrite: bool = False, seed_index: int | None = None) -> Report:
  """Compresses the images in ``input_path`` (``.npy``, ``.npz``, IDX) to
  ``output_path``, atomically; returns the report of what was written.
  ``seed_index``: which model of a run of several seeds (None: a Run's own,
  a directory's first)."""
  io.check_output(output_path, overwrite)
  step = check_step(step)
  x = arrays.read_array(input_path)
  run = as_run(run, seed_index)
  blob = compress(run, x, step)
  rep = report(run, x, blob)
  io.write_bytes(output_path, blob, overwrite)
  return rep


def decompress_file(run: Run | str | os.PathLike, input_path: str | os.PathLike,
                    output_path: str | os.PathLike, overwrite: bool = False,
                    seed_index: int | None = None) -> np.ndarray:
  """Restores a compressed file to ``output_path`` (``.npy`` or IDX), atomically.
  ``seed_index``: which model of a run of several seeds (None: a Run's own,
  a directory's first)."""
  arrays.check_array_output(output_path, overwrite)
  path = Path(input_path)
  if path.is_dir():
    raise DataError(f"compressed file {path} is a folder")
  if not path.is_file():
    raise DataError(f"compressed file {path} does not exist")
  blob = path.read_bytes()
  header, _ = read_header(blob, str(path))  # Format errors before loading the run.
  if not isinstance(run, Run):  # A directory: the checkpoint that made the file.
    run = _run_that_made(run, header, seed_index)
  out = decompress(as_run(run, seed_index), blob, name=str(path))
  arrays.write_array(output_path, out, overwrite)
  return out


def _run_that_made(run_dir: str | os.PathLike, header: Header,
                   seed_index: int | None) -> Run:
  """The run directory's model whose weights wrote ``header``'s file: the
  latest checkpoint, or an earlier one still kept (a run that trained on
  after compressing); the latest if none matches (its error names the cause)."""
  from flaxae.api import load  # pylint: disable=import-outside-toplevel
  index = 0 if seed_index is None else seed_index
  latest = load(run_dir, seed_index=index)
  if header.weights == weights_digest(latest) or header.fingerprint != fingerprint(
      latest.config):
    return latest
  for step in reversed(checkpoint_steps(run_dir)[:-1]):
    candidate = load(run_dir, step=step, seed_index=index)
    if header.weights == weights_digest(candidate):
      return candidate
  return latest
