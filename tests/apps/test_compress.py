"""Compression to real bytes: exact round trips, honest sizes, clear errors."""

from __future__ import annotations

import dataclasses
import struct
import types
import zlib

import hypothesis
import jax
import numpy as np
import pytest
from hypothesis import strategies as st

from flaxae import cli
from flaxae.apps import codec as K
from flaxae.apps import compress as C
from flaxae.apps import container
from flaxae.errors import ConfigError, DataError, FormatError, OutputError


def _decoded(run, x, step):
  """What decompression must give: the decoder's output for the quantised codes."""
  q = K.quantize(run.encode(x), step)
  return run.decode(K.dequantize(q, step).reshape(len(q), *run.model.code_shape))


def _with_crc(blob: bytes) -> bytes:
  body = blob[:-4]
  return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def blob(digits_run, digits):
  return C.compress(digits_run, digits.test_x, step=0.25)


def test_round_trip_is_exactly_the_decoder_output(digits_run, digits, blob):
  out = C.decompress(digits_run, blob)
  assert out.dtype == np.float32 and out.shape == digits.test_x.shape
  np.testing.assert_array_equal(out, _decoded(digits_run, digits.test_x, 0.25))


def test_uint8_input_gives_uint8_output_of_the_same_shape(digits_run, digits):
  x = np.rint(digits.test_x[:40, ..., 0] * 255).astype(np.uint8)
  out = C.decompress(digits_run, C.compress(digits_run, x, step=0.5))
  assert out.dtype == np.uint8 and out.shape == x.shape
  ref = np.rint(_decoded(digits_run, x, 0.5) * 255).astype(np.uint8).reshape(x.shape)
  np.testing.assert_array_equal(out, ref)


def test_report_matches_the_file(digits_run, digits, blob):
  rep = C.report(digits_run, digits.test_x, blob)
  pixels = digits.test_x.size
  assert rep.file_bytes == len(blob) and rep.pixels == rep.values == pixels
  assert rep.bits_per_pixel == pytest.approx(8 * len(blob) / pixels)
  assert rep.ratio == pytest.approx(pixels / len(blob))
  header, words = container.read_header(blob)
  assert rep.header_bytes + 4 * len(words) == len(blob)
  restored = C.decompress(digits_run, blob)
  assert rep.psnr == pytest.approx(C.psnr(digits.test_x, restored))
  assert 0.0 < rep.ssim <= 1.0 and rep.psnr > 10.0
  assert header.shape == digits.test_x.shape and header.step == 0.25


def test_the_stream_is_close_to_the_model_entropy(digits_run, digits, blob):
  codec = C.get_codec(digits_run, 0.25)
  q = K.quantize(digits_run.encode(digits.test_x), 0.25)
  _, words = container.read_header(blob)
  assert 4 * len(words) <= codec.bits(q) / 8 + 16


def test_smaller_steps_cost_more_bits_and_lose_less(digits_run, digits):
  reports = [C.report(digits_run, digits.test_x, C.compress(digits_run, digits.test_x, s))
             for s in (1.0, 0.25, 0.05)]
  bpp = [r.bits_per_pixel for r in reports]
  assert bpp[0] < bpp[1] < bpp[2]
  assert reports[2].psnr >= reports[0].psnr - 0.05


def test_codes_outside_the_histogram_are_escaped_exactly(digits_run, digits):
  codes = digits_run.encode(digits.train_x[:20])
  codec = K.fit_codec(codes, 0.05)  # A narrow model: most test codes escape it.
  q = K.quantize(digits_run.encode(digits.test_x), 0.05)
  assert ((q < codec.lo) | (q >= codec.lo + [len(c) - 1 for c in codec.counts])).any()
  blob = C.compress(digits_run, digits.test_x, 0.05, codec=codec)
  out = C.decompress(digits_run, blob, codec=codec)
  np.testing.assert_array_equal(out, _decoded(digits_run, digits.test_x, 0.05))
  # Refused with the run's own model: the one its codecs folder keeps (when an
  # earlier test of the session made it), or the one fitted again (when not).
  with pytest.raises(FormatError, match="another probability model|does not hold"):
    C.decompress(digits_run, blob)


def test_colour_images_count_pixels_not_values(digits, blob):
  # Bits per pixel counts an RGB pixel once, as image codecs do; the ratio
  # compares with one raw byte per value.
  header, words = container.read_header(blob)
  colour = container.pack(dataclasses.replace(header, shape=(4, 6, 10, 3)), words)
  run = types.SimpleNamespace(feature_shape=(6, 10, 3))
  x = np.random.default_rng(0).random((4, 6, 10, 3))
  rep = C.report(run, x, colour, restored=x)
  assert (rep.examples, rep.pixels, rep.values) == (4, 240, 720)
  assert rep.bits_per_pixel == pytest.approx(8 * len(colour) / 240)
  assert rep.ratio == pytest.approx(720 / len(colour))


def test_the_codec_is_cached_in_the_run_directory(digits_run):
  path = C.codec_path(digits_run, 0.25)
  assert path.exists()
  assert K.Codec.read(path).digest == C.get_codec(digits_run, 0.25).digest


def test_an_empty_cached_codec_is_refitted(digits_run, digits):
  path = C.codec_path(digits_run, 0.75)
  good = C.get_codec(digits_run, 0.75)
  path.write_bytes(b"")  # What a crash before the data reached the disk once left.
  assert C.get_codec(digits_run, 0.75).digest == good.digest
  assert K.Codec.read(path).digest == good.digest  # Replaced by a whole one.


def test_codes_too_large_for_the_step_are_refused():
  # round(z / step) beyond 32 bits: once cast to int64 silently (to -2**63).
  with pytest.raises(DataError, match="too large for the quantisation step"):
    K.quantize(np.array([[0.5, -1.0]]), 1e-30)
  with pytest.raises(DataError, match="NaN or Inf"):
    K.quantize(np.array([[np.nan]]), 0.5)
  np.testing.assert_array_equal(K.quantize(np.array([[0.5, -1.0]]), 1e-9),
                                [[500_000_000, -1_000_000_000]])


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(n=st.integers(1, 4), step=st.sampled_from([0.05, 0.3, 2.0]),
                  seed=st.integers(0, 2**16))
def test_property_random_inputs_round_trip(digits_run, n, step, seed):
  x = np.random.default_rng(seed).integers(0, 256, (n, 8, 8), dtype=np.uint8)
  blob = C.compress(digits_run, x, step)
  out = C.decompress(digits_run, blob)
  ref = np.rint(_decoded(digits_run, x, step) * 255).astype(np.uint8).reshape(x.shape)
  np.testing.assert_array_equal(out, ref)
  assert C.report(digits_run, x, blob, out).file_bytes == len(blob)


# --- Bad files ----------------------------------------------------------------


def test_wrong_magic(digits_run):
  with pytest.raises(FormatError, match="not a flaxae compressed file"):
    C.decompress(digits_run, b"\x93NUMPY" + b"\0" * 100)


@pytest.mark.parametrize("keep", [0, 3, 20, 60, -1])
def test_truncated(digits_run, blob, keep):
  cut = blob[:keep] if keep >= 0 else blob[:-1]
  with pytest.raises(FormatError, match="truncated"):
    C.decompress(digits_run, cut)


@pytest.mark.parametrize("where", [34, 70, -6])  # Step, stream, end of stream.
def test_corrupt_byte_fails_the_checksum(digits_run, blob, where):
  bad = bytearray(blob)
  bad[where] ^= 0x10
  with pytest.raises(FormatError, match="checksum"):
    C.decompress(digits_run, bytes(bad))


def test_trailing_bytes(digits_run, blob):
  with pytest.raises(FormatError, match="bytes after its end"):
    C.decompress(digits_run, blob + b"\0")


def test_unknown_version(digits_run, blob):
  bad = bytearray(blob)
  bad[4] = 9
  with pytest.raises(FormatError, match="format version 9"):
    C.decompress(digits_run, _with_crc(bytes(bad)))


def test_file_from_another_model(digits_run, blob):
  bad = bytearray(blob)
  bad[8:16] = bytes.fromhex("0123456789abcdef")
  with pytest.raises(FormatError, match="another model"):
    C.decompress(digits_run, _with_crc(bytes(bad)))


def test_file_from_other_weights(digits_run, blob):
  other = dataclasses.replace(
      digits_run, variables=jax.tree.map(lambda a: a * 1.01, digits_run.variables))
  with pytest.raises(FormatError, match="other weights"):
    C.decompress(other, blob)


@pytest.mark.parametrize("step", [0.0, -1.0, float("nan")])
def test_bad_step(digits_run, digits, step):
  with pytest.raises(ConfigError, match="step must be positive"):
    C.compress(digits_run, digits.test_x[:2], step)


# --- Command line ---------------------------------------------------------------


def test_cli_round_trip(digits_run, digits, tmp_path, capsys):
  x = np.rint(digits.test_x[:30, ..., 0] * 255).astype(np.uint8)
  np.save(tmp_path / "x.npy", x)
  argv = ["compress", str(digits_run.dir), str(tmp_path / "x.npy"), "-o",
          str(tmp_path / "x.fxae"), "--step=0.5", f"--json_out={tmp_path / 'r.json'}"]
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  size = (tmp_path / "x.fxae").stat().st_size
  assert f"{size} bytes for 30 examples" in printed
  assert f"{8 * size / x.size:.4f} bits per pixel" in printed
  assert cli.main(["decompress", str(digits_run.dir), str(tmp_path / "x.fxae"),
                   "-o", str(tmp_path / "y.npy")]) == 0
  y = np.load(tmp_path / "y.npy")
  np.testing.assert_array_equal(
      y, np.rint(_decoded(digits_run, x, 0.5) * 255).astype(np.uint8).reshape(x.shape))
  # IDX out, and IDX in.
  assert cli.main(["decompress", str(digits_run.dir), str(tmp_path / "x.fxae"),
                   "-o", str(tmp_path / "y-idx3-ubyte.gz")]) == 0
  assert cli.main(["compress", str(digits_run.dir), str(tmp_path / "y-idx3-ubyte.gz"),
                   "-o", str(tmp_path / "z.fxae")]) == 0


def test_cli_refuses_to_replace_without_overwrite(digits_run, digits, tmp_path):
  np.save(tmp_path / "x.npy", digits.test_x[:8])
  (tmp_path / "x.fxae").write_bytes(b"keep me")
  argv = ["compress", str(digits_run.dir), str(tmp_path / "x.npy"), "-o",
          str(tmp_path / "x.fxae")]
  with pytest.raises(OutputError, match="exists; pass --overwrite"):
    cli.main([*argv, "--debug"])
  assert (tmp_path / "x.fxae").read_bytes() == b"keep me"
  assert cli.main([*argv, "--overwrite"]) == 0
  assert (tmp_path / "x.fxae").read_bytes()[:4] == container.MAGIC


def test_cli_output_must_be_npy_or_idx(digits_run, tmp_path):
  (tmp_path / "x.fxae").write_bytes(b"FXAE")
  with pytest.raises(OutputError, match="name the output"):
    cli.main(["decompress", str(digits_run.dir), str(tmp_path / "x.fxae"), "-o",
              str(tmp_path / "y.png"), "--debug"])


# --- Files consistent in their checksum, not in their header (made by hand) -----


def _repacked(blob, **changes):
  header, words = container.read_header(blob)
  return container.pack(dataclasses.replace(header, **changes), words)


@pytest.mark.parametrize("n,message", [(10, "holds more than 10 examples"),
                                       (4_000_000, "cannot hold 4000000 examples")])
def test_a_header_with_another_example_count_is_refused(digits_run, blob, n, message):
  # 10: ten images written, exit 0; 4e6: a MemoryError or an AssertionError.
  header, _ = container.read_header(blob)
  with pytest.raises(FormatError, match=message):
    C.decompress(digits_run, _repacked(blob, shape=(n, *header.shape[1:])))


@pytest.mark.parametrize("changes", [dict(step=0.0), dict(step=float("nan")),
                                     dict(shape=(0, 8, 8, 1))])
def test_an_impossible_header_is_corrupt(digits_run, blob, changes):
  with pytest.raises(FormatError, match="is corrupt"):
    C.decompress(digits_run, _repacked(blob, **changes))


def test_a_probability_model_fitted_anew_that_differs_is_refused_not_kept(digits_run, blob):
  # A file that names a step whose model is not cached: the model fitted now is
  # not the file's; it used to be kept in RUN/codecs, refusing every later file.
  with pytest.raises(FormatError, match="fitted again on the run's training data differs"):
    C.decompress(digits_run, _repacked(blob, step=0.3141))
  assert not C.codec_path(digits_run, 0.3141).exists()


def test_a_run_that_trained_on_decompresses_with_the_checkpoint_that_compressed(
    tmp_path, digits):
  from flaxae import Config, fit, load  # pylint: disable=import-outside-toplevel
  from flaxae.config import CheckpointConfig, ModelConfig, TrainConfig  # pylint: disable=import-outside-toplevel
  cfg = Config(model=ModelConfig(widths=(16, 4)), train=TrainConfig(epochs=1, batch_size=64),
               checkpoint=CheckpointConfig(keep=3), run_dir=str(tmp_path / "run"))
  fit(cfg, progress=False)
  x = digits.test_x[:20]
  C.compress_file(cfg.run_dir, _saved(tmp_path / "x.npy", x), tmp_path / "x.fxae")
  first = load(cfg.run_dir)
  fit(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2)),
      progress=False)
  with pytest.raises(FormatError, match="one no longer kept if the run trained on"):
    C.decompress(load(cfg.run_dir), (tmp_path / "x.fxae").read_bytes())
  out = C.decompress_file(cfg.run_dir, tmp_path / "x.fxae", tmp_path / "y.npy")
  np.testing.assert_array_equal(out, _decoded(first, x, C.DEFAULT_STEP))


def _saved(path, x):
  np.save(path, x)
  return path


def test_cli_json_report_is_not_the_compressed_file(digits_run, tmp_path):
  np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, 64)))
  argv = ["compress", str(digits_run.dir), str(tmp_path / "x.npy"), "-o",
          str(tmp_path / "x.fxae")]
  with pytest.raises(OutputError, match="both"):  # The report replaced the file.
    cli.main([*argv, f"--json_out={tmp_path / 'x.fxae'}", "--overwrite", "--debug"])
  assert not (tmp_path / "x.fxae").exists()



@pytest.mark.parametrize("blob,message", [("x.fxae", "got the path 'x.fxae'"),
                                          (None, "got NoneType")])
def test_decompress_takes_bytes(digits_run, blob, message):
  with pytest.raises(ConfigError, match=message):  # Was a bare TypeError.
    C.decompress(digits_run, blob)


def test_decompressing_a_folder_says_so(digits_run, tmp_path):
  with pytest.raises(DataError, match="is a folder"):
    C.decompress_file(digits_run, tmp_path, tmp_path / "y.npy")


def test_codes_that_are_not_finite_are_not_too_large():
  with pytest.raises(DataError, match="codes are NaN or Inf"):  # Was "use a larger step".
    K.quantize(np.array([[0.5, np.nan]]), 0.5)


def test_no_probability_model_is_fitted_on_data_changed_since_training(tmp_path):
  # It was fitted on the new data and kept under the run's name: every file
  # compressed before was refused from then on, the data restored or not.
  from flaxae import Config, fit  # pylint: disable=import-outside-toplevel
  from flaxae.config import DataConfig, ModelConfig, TrainConfig  # pylint: disable=import-outside-toplevel
  from flaxae.errors import CheckpointError  # pylint: disable=import-outside-toplevel
  data = np.random.default_rng(0).integers(0, 256, (256, 8, 8), np.uint8)
  np.save(tmp_path / "d.npy", data)
  run = fit(Config(data=DataConfig(name="npy", path=str(tmp_path / "d.npy")),
                   model=ModelConfig(widths=(16, 4)),
                   train=TrainConfig(epochs=1, batch_size=64), run_dir=str(tmp_path / "run")),
            progress=False)
  np.save(tmp_path / "d.npy", data // 2)
  with pytest.raises(CheckpointError, match="fitted on the run's own training data"):
    C.compress(run, data[:4])
  assert not (tmp_path / "run" / C.CODEC_DIR).exists()
