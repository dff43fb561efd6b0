"""The bad-input corpus: every user mistake gets the library's own error class,
one line on stderr, exit status 2 from the CLI, no traceback, and nothing that
was already written changes."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import jax
import pytest

from flaxae import cli
from flaxae.data import write_idx
from flaxae.errors import (CheckpointError, ConfigError, DataError, FlaxaeError,
                           FormatError, OutputError, ShapeError)

TINY = ["--model.widths=16,4", "--train.epochs=1", "--train.batch_size=64", "--no-progress"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
  """A folder with a good run and the bad files the cases need."""
  root = tmp_path_factory.mktemp("corpus")
  assert cli.main(["train", f"--run_dir={root / 'good'}", *TINY]) == 0
  np.save(root / "vec1d.npy", np.zeros(10, np.float32))
  np.save(root / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
  np.save(root / "complex.npy", np.zeros((4, 4), np.complex64))
  nan = np.full((20, 8, 8), 0.5, np.float32); nan[3, 2, 2] = np.nan
  np.save(root / "nan.npy", nan)
  inf = np.full((20, 8, 8), 0.5, np.float32); inf[0, 0, 0] = np.inf
  np.save(root / "inf.npy", inf)
  np.save(root / "range.npy", np.full((20, 8, 8), 255.0, np.float32))
  np.save(root / "empty.npy", np.zeros((0, 8), np.float32))
  np.save(root / "no_images.npy", np.zeros((0, 8, 8), np.uint8))
  np.save(root / "small.npy", np.random.default_rng(0).random((20, 8, 8), np.float32))
  (root / "trunc").mkdir()
  write_idx(root / "trunc" / "t10k-images-idx3-ubyte.gz", np.zeros((50, 8, 8), np.uint8))
  blob = (root / "trunc" / "t10k-images-idx3-ubyte.gz").read_bytes()
  (root / "trunc" / "t10k-images-idx3-ubyte.gz").write_bytes(blob[:len(blob) // 2])
  (root / "header").mkdir()
  (root / "header" / "t10k-images-idx3-ubyte.gz").write_bytes(
      gzip.compress(b"\x00\x00\x08\x03" + (50).to_bytes(4, "big") + b"\x00" * 40))
  (root / "notrun").mkdir()
  shutil.copytree(root / "good", root / "nockpt")
  shutil.rmtree(root / "nockpt" / "checkpoints")
  shutil.copytree(root / "good", root / "corrupt")
  for f in (root / "corrupt" / "checkpoints").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(bytes(b ^ 0x5A for b in f.read_bytes()))
  shutil.copytree(root / "good", root / "badjson")
  (root / "badjson" / "config.json").write_text("{not json")
  (root / "exists.json").write_text("{}")
  return root


def _snapshot(root: Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def _train(*args):
  return ["train", *TINY, *args]


# (id, argv with {w} for the work folder, the exact error class, a message fragment)
CASES = [
    ("wrong shape", _train("--data.name=npy", "--data.path={w}/vec1d.npy", "--run_dir={w}/o"),
     ShapeError, "shape (10,)"),
    ("wrong dtype strings", _train("--data.name=npy", "--data.path={w}/strings.npy",
                                   "--run_dir={w}/o"), DataError, "dtype"),
    ("wrong dtype complex", _train("--data.name=npy", "--data.path={w}/complex.npy",
                                   "--run_dir={w}/o"), DataError, "dtype"),
    ("nan in data", _train("--data.name=npy", "--data.path={w}/nan.npy", "--run_dir={w}/o"),
     DataError, "NaN"),
    ("inf in data", _train("--data.name=npy", "--data.path={w}/inf.npy", "--run_dir={w}/o"),
     DataError, "Inf"),
    ("values out of range", _train("--data.name=npy", "--data.path={w}/range.npy",
                                   "--run_dir={w}/o"), DataError, "[0, 1]"),
    ("empty data set", _train("--data.name=npy", "--data.path={w}/empty.npy",
                              "--run_dir={w}/o"), DataError, "empty"),
    ("batch larger than data", _train("--data.name=npy", "--data.path={w}/small.npy",
                                      "--run_dir={w}/o"), ShapeError,
     "batch size 64 is larger than the training set (16 examples)"),
    ("batch not divisible", _train("--train.batch_size=30", "--run_dir={w}/o"), ConfigError,
     "batch size 30 is not divisible by the number of devices 4"),
    ("unknown data set", _train("--data.name=cifar99", "--run_dir={w}/o"), DataError,
     "unknown data set 'cifar99'"),
    ("missing file", _train("--data.name=npy", "--data.path={w}/nope.npy", "--run_dir={w}/o"),
     DataError, "does not exist"),
    ("missing folder", _train("--data.name=idx", "--data.dir={w}/nope", "--run_dir={w}/o"),
     DataError, "does not exist"),
    ("truncated gzip", _train("--data.name=idx", "--data.dir={w}/trunc", "--run_dir={w}/o"),
     DataError, "truncated gzip"),
    ("corrupt idx header", _train("--data.name=idx", "--data.dir={w}/header",
                                  "--run_dir={w}/o"), DataError, "header"),
    ("unknown model kind", _train("--model.kind=transformer", "--run_dir={w}/o"), ConfigError,
     "unknown model.kind 'transformer'"),
    ("unknown activation", _train("--model.activation=swish2", "--run_dir={w}/o"), ConfigError,
     "unknown activation 'swish2'"),
    ("negative size", _train("--model.widths=16,-4", "--run_dir={w}/o"), ConfigError,
     "model.widths must be a non-empty list of positive sizes"),
    ("zero epochs", _train("--train.epochs=0", "--run_dir={w}/o"), ConfigError,
     "train.epochs must be positive"),
    ("negative learning rate", _train("--train.learning_rate=-1", "--run_dir={w}/o"),
     ConfigError, "train.learning_rate must not be negative"),
    ("too many devices", _train("--train.num_devices=16", "--run_dir={w}/o"), ConfigError,
     "train.num_devices=16 but only 4"),
    ("conv on vectors", _train("--model.arch=conv", "--data.name=npy",
                               "--data.path={w}/small.npy", "--run_dir={w}/o"), None, None),
    ("run dir from another config", _train("--run_dir={w}/good", "--model.widths=16,8"),
     CheckpointError, "was made with another config (model.widths: [16, 4] → [16, 8])"),
    ("eval: not a run dir", ["eval", "{w}/notrun"], CheckpointError,
     "is not a flaxae run directory"),
    ("eval: missing checkpoint", ["eval", "{w}/nockpt"], CheckpointError, "no checkpoint"),
    ("eval: corrupt checkpoint", ["eval", "{w}/corrupt"], CheckpointError, "cannot be read"),
    ("eval: corrupt config", ["eval", "{w}/badjson"], CheckpointError, "is not valid JSON"),
    ("output in a missing folder", ["eval", "{w}/good", "--json_out={w}/nope/e.json"],
     OutputError, "does not exist"),
    ("output in an unwritable place", ["eval", "{w}/good", "--json_out=/proc/e.json"],
     OutputError, "cannot write /proc/e.json"),
    ("existing output", ["eval", "{w}/good", "--json_out={w}/exists.json"], OutputError,
     "exists; pass --overwrite"),
]
# A conv model needs images: the npy of 8×8 images is images, so use vectors.
CASES[20] = ("conv on vectors", ["train", "--model.arch=conv", "--data.name=npy",
                                 "--data.path={w}/vec2d.npy", "--run_dir={w}/o", *TINY],
             ShapeError, "model.arch=conv needs images")


# Compression, detection and embeddings (flaxae.apps); their files come from
# ``apps_files`` below.
_DECOMPRESS = ["decompress", "{w}/good"]
CASES += [
    ("decompress: file from another model", [*_DECOMPRESS, "{w}/other.fxae", "-o", "{w}/o.npy"],
     FormatError, "was compressed with another model"),
    ("decompress: truncated file", [*_DECOMPRESS, "{w}/truncated.fxae", "-o", "{w}/o.npy"],
     FormatError, "is truncated"),
    ("decompress: corrupt file", [*_DECOMPRESS, "{w}/corrupt.fxae", "-o", "{w}/o.npy"],
     FormatError, "is corrupt (checksum mismatch)"),
    ("decompress: wrong magic", [*_DECOMPRESS, "{w}/small.npy", "-o", "{w}/o.npy"],
     FormatError, "is not a flaxae compressed file"),
    ("decompress: missing file", [*_DECOMPRESS, "{w}/nope.fxae", "-o", "{w}/o.npy"],
     DataError, "does not exist"),
    ("decompress: output not npy or idx", [*_DECOMPRESS, "{w}/good.fxae", "-o", "{w}/o.png"],
     OutputError, "name the output FILE.npy"),
    ("compress: existing output", ["compress", "{w}/good", "{w}/x8.npy", "-o",
                                   "{w}/exists.json"], OutputError, "exists; pass --overwrite"),
    ("compress: zero step", ["compress", "{w}/good", "{w}/x8.npy", "-o", "{w}/n.fxae",
                             "--step=0"], ConfigError, "step must be positive"),
    ("compress: wrong width", ["compress", "{w}/good", "{w}/vec2d.npy", "-o", "{w}/n.fxae"],
     ShapeError, "do not fit this model"),
    ("compress: no examples", ["compress", "{w}/good", "{w}/no_images.npy", "-o",
                               "{w}/n.fxae"], DataError, "no examples to compress"),
    ("detect: wrong width", ["detect", "{w}/good", "{w}/vec2d.npy"], ShapeError,
     "do not fit this detector"),
    ("detect: output not csv or npy", ["detect", "{w}/good", "{w}/x8.npy", "-o", "{w}/d.txt"],
     OutputError, "name the output FILE.csv or FILE.npy"),
    ("embed: existing output", ["embed", "{w}/good", "{w}/x8.npy", "-o", "{w}/small.npy"],
     OutputError, "exists; pass --overwrite"),
    ("train: --config of nothing", ["train", "--config="], ConfigError,
     "--config needs a file"),
    ("detect: nan threshold", ["detect", "{w}/good", "{w}/x8.npy", "--threshold=nan"],
     ConfigError, "the threshold must be a finite number, got nan"),
    # Settings refused before the run directory is written (NaN passed every range
    # check; the last two were refused only once the step was traced, after it).
    ("nan learning rate", _train("--train.learning_rate=nan", "--run_dir={w}/o"),
     ConfigError, "train.learning_rate must be a finite number, got nan"),
    ("negative split seed", _train("--data.split_seed=-1", "--run_dir={w}/o"),
     ConfigError, "data.split_seed must not be negative"),
    ("closed-form Jacobian of a deep encoder",
     _train("--model.kind=contractive", "--model.jacobian=closed_form", "--run_dir={w}/o"),
     ConfigError, "model.jacobian=closed_form needs an encoder of one dense sigmoid layer"),
    ("micro-batches larger than a device's shard",
     _train("--train.strategy=shard_map", "--train.micro_batch_size=32", "--run_dir={w}/o"),
     ConfigError, "does not divide the per-device batch of 16"),
]


@pytest.fixture(scope="module")
def apps_files(work):
  """A compressed file, one from another model, a truncated and a corrupt one."""
  from flaxae.apps import compress  # pylint: disable=import-outside-toplevel
  np.save(work / "x8.npy", np.random.default_rng(0).integers(0, 256, (10, 8, 8), np.uint8))
  assert cli.main(["train", f"--run_dir={work / 'other'}", "--model.widths=16,8",
                   *TINY[1:]]) == 0
  compress.compress_file(work / "good", work / "x8.npy", work / "good.fxae")
  compress.compress_file(work / "other", work / "x8.npy", work / "other.fxae")
  blob = (work / "good.fxae").read_bytes()
  (work / "truncated.fxae").write_bytes(blob[:len(blob) - 9])
  corrupt = bytearray(blob)
  corrupt[len(blob) // 2] ^= 0x01
  (work / "corrupt.fxae").write_bytes(bytes(corrupt))


@pytest.fixture(autouse=True)
def _apps_files_for_corpus_tests(request):
  if "work" in request.fixturenames:
    request.getfixturevalue("apps_files")


def test_api_detector_before_fit():
  # pylint: disable-next=import-outside-toplevel
  from flaxae.apps.anomaly import AutoencoderDetector, NotFittedError
  with pytest.raises(NotFittedError, match="not fitted yet; call fit") as info:
    AutoencoderDetector().predict(np.zeros((2, 64), np.float32))
  assert type(info.value) is NotFittedError and isinstance(info.value, FlaxaeError)


@pytest.fixture(scope="module")
def vectors(work):
  np.save(work / "vec2d.npy", np.random.default_rng(0).random((100, 12), np.float32))


def test_corpus_is_large_enough():
  assert len(CASES) >= 25


NEEDS_FOUR_DEVICES = {"batch not divisible", "too many devices",
                      "micro-batches larger than a device's shard"}


@pytest.mark.parametrize("name,argv,error,message", CASES, ids=[c[0] for c in CASES])
def test_cli_error(work, vectors, capsys, name, argv, error, message):
  del vectors
  if name in NEEDS_FOUR_DEVICES and jax.device_count() != 4:
    pytest.skip(f"its message names the 4 devices; {jax.device_count()} available")
  argv = [a.format(w=work) for a in argv]
  before = _snapshot(work)
  capsys.readouterr()
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("flaxae: error: "), err
  assert message in lines[0]
  assert "Traceback" not in err
  # --debug shows the exact exception class with its traceback.
  with pytest.raises(error, match=None) as info:
    cli.main([*argv, "--debug"])
  assert type(info.value) is error and isinstance(info.value, FlaxaeError)
  after = _snapshot(work)
  assert after == before, "a failing command changed files that were already written"


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--model.nope=3"], "--model.nope"),
    (["train", "--train.epochs=abc"], "--train.epochs"),
    (["train", "--model.widths=16,x"], "--model.widths"),
    (["eval"], "run"),
])
def test_parse_errors_are_status_2(capsys, argv, fragment):
  with pytest.raises(SystemExit) as info:
    cli.main(argv)
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert fragment in err and "Traceback" not in err


def test_api_wrong_width_to_a_fitted_model(work):
  import flaxae  # pylint: disable=import-outside-toplevel
  run = flaxae.load(work / "good")
  with pytest.raises(ShapeError, match=r"inputs of shape \(3, 10\) do not fit this model"):
    run.encode(np.zeros((3, 10), np.float32))
  with pytest.raises(DataError, match="NaN"):
    run.reconstruct(np.full((2, 64), np.nan, np.float32))
  # Codes are checked against the model's code shape as inputs are against its images.
  assert run.code_shape == (4,)
  with pytest.raises(ShapeError, match=r"codes of shape \(2, 5\) do not fit this model, "
                                       r"which decodes codes of shape \(4,\)"):
    run.decode(np.zeros((2, 5), np.float32))
  with pytest.raises(DataError, match="codes contain NaN"):
    run.decode(np.full((2, 4), np.inf, np.float32))
  with pytest.raises(DataError, match="codes must be numbers"):
    run.decode(np.array([["a", "b", "c", "d"]]))
  with pytest.raises(DataError, match="no examples to evaluate"):
    run.evaluate(np.zeros((0, 8, 8, 1), np.float32))


def test_api_takes_only_the_layouts_of_an_example(work):
  import flaxae  # pylint: disable=import-outside-toplevel
  run = flaxae.load(work / "good")  # Examples of shape (8, 8, 1).
  x = np.random.default_rng(0).random((3, 8, 8, 1), np.float32)
  codes = run.encode(x)
  for same in (x.reshape(3, 64), x[..., 0]):  # Flattened, or without the channel axis.
    np.testing.assert_array_equal(run.encode(same), codes)
  for one in (x[0], x[0, ..., 0], x[0].ravel()):  # One example, in each layout.
    np.testing.assert_allclose(run.encode(one), codes[:1], rtol=1e-6, atol=1e-6)
  # The right number of values in another order is refused, not silently read.
  for wrong in (x.transpose(0, 3, 1, 2), x.reshape(3, 8, 4, 2), x.reshape(1, 3, 64)):
    with pytest.raises(ShapeError, match=rf"inputs of shape \({wrong.shape[0]}, "):
      run.encode(wrong)
  with pytest.raises(ShapeError, match=r"codes of shape \(2, 2, 2\) do not fit"):
    run.decode(np.zeros((2, 2, 2), np.float32))


def test_damaged_run_files_are_named(work, tmp_path):
  import flaxae  # pylint: disable=import-outside-toplevel
  shutil.copytree(work / "good", tmp_path / "run")
  with pytest.raises(CheckpointError, match=r"no checkpoint of step 999 .* it has steps \d"):
    flaxae.load(tmp_path / "run", step=999)
  metrics = tmp_path / "run" / "metrics.jsonl"
  metrics.write_text(metrics.read_text() + '{"step": 3, "lo')
  with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 2, is not a JSON record"):
    flaxae.load(tmp_path / "run")
  metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
  (tmp_path / "run" / "run.json").write_text("{")
  with pytest.raises(CheckpointError, match=r"run.json is damaged"):
    flaxae.load(tmp_path / "run")
  assert cli.main(["eval", str(tmp_path / "run")]) == 2


def test_good_run_is_untouched_by_the_corpus(work):
  config = json.loads((work / "good" / "config.json").read_text())
  assert config["model"]["widths"] == [16, 4]


def test_api_misuse_raises_flaxaes_own_errors(work):
  import flaxae  # pylint: disable=import-outside-toplevel
  from flaxae.apps import compress, generate  # pylint: disable=import-outside-toplevel
  run = flaxae.load(work / "good")
  x = np.random.default_rng(0).random((3, 8, 8, 1), np.float32)
  cases = [
      (lambda: flaxae.fit("runs/x"), ConfigError, "a flaxae.Config is needed, got str"),
      (lambda: flaxae.load(None), ConfigError, "load takes a run directory"),
      (lambda: run.encode([[1, 2], [3]]), DataError, "must be an array of numbers"),
      (lambda: run.encode(np.zeros((2, 64), bool)), DataError, "got dtype bool"),
      (lambda: run.evaluate(x, noise=3), ConfigError, "noise must be a corruption"),
      (lambda: compress.compress(run, x, step="a"), ConfigError, "step must be a number"),
      (lambda: generate.latent_grid(run, n=-1), ConfigError, "n ≥ 1 images a side"),
  ]
  for call, error, message in cases:
    with pytest.raises(error, match=message):
      call()
  # The module-level helpers take a run directory too.
  np.testing.assert_array_equal(flaxae.encode(work / "good", x), run.encode(x))


def test_api_compiles_a_few_programs_for_inputs_of_every_length(work, tmp_path):
  import flaxae  # pylint: disable=import-outside-toplevel
  from flaxae import api  # pylint: disable=import-outside-toplevel
  run = flaxae.load(work / "good")
  x = np.random.default_rng(1).random((300, 8, 8, 1), np.float32)
  before = api._apply._cache_size()
  codes = [run.encode(x[:n]) for n in range(1, 41)]
  assert api._apply._cache_size() - before <= 7  # Powers of two up to 64, not 40.
  for n, c in enumerate(codes, 1):  # Padding changes no example's code.
    np.testing.assert_allclose(c, run.encode(x)[:n], rtol=1e-6, atol=1e-6)
  # A memory-mapped input is read a batch at a time, with the same result.
  np.save(tmp_path / "x.npy", (x * 255).astype(np.uint8))
  mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
  np.testing.assert_array_equal(run.encode(mapped), run.encode(np.asarray(mapped)))
  # Evaluating again compiles nothing.
  run.evaluate(x)
  hits = api._eval_program.cache_info().hits
  run.evaluate(x[:100])
  assert api._eval_program.cache_info().hits == hits + 1
