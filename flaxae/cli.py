"""The ``flaxae`` command: a thin layer over the library.

``flaxae train --model.widths=784,256,64 --train.epochs=50`` overrides any
config field; ``flaxae eval RUN_DIR`` evaluates a run. Problems the user can
fix are one line on stderr and exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
import typing
from pathlib import Path
from typing import Annotated

import tyro

from flaxae import config as config_lib
from flaxae.config import Config
from flaxae.errors import ConfigError, FlaxaeError, OutputError

_registry = tyro.constructors.ConstructorRegistry()


@_registry.primitive_rule
def _int_tuple_rule(info: tyro.constructors.PrimitiveTypeInfo):
  """``tuple[int, ...]`` from ``784,256,64`` (or ``784 256 64``)."""
  if typing.get_origin(info.type) is not tuple or typing.get_args(info.type) != (int, ...):
    return None

  def parse(args: list[str]) -> tuple[int, ...]:
    parts = [p for a in args for p in a.split(",") if p.strip()]
    try:
      return tuple(int(p) for p in parts)
    except ValueError as e:
      raise ValueError(f"expected integers separated by commas, got {' '.join(args)!r}") from e

  return tyro.constructors.PrimitiveConstructorSpec(
      nargs="*", metavar="INT,INT,...", instance_from_str=parse,
      is_instance=lambda x: isinstance(x, tuple),
      str_from_instance=lambda x: [",".join(map(str, x))])


def train(cfg: Annotated[Config, tyro.conf.arg(name=""), tyro.conf.FlagConversionOff],
          progress: bool = True) -> int:
  """Train an autoencoder (or resume the run in --run_dir).

  ``--config=FILE.json`` (a run's config.json, or its run directory) starts
  from a saved config instead of the defaults (all but its distributed
  section: how a job is launched is given anew); the other options override
  it. Ctrl-C or SIGTERM saves a checkpoint at the current step and exits with
  128 + the signal number; the same command resumes.

  Args:
    cfg: The run's data, model, training, checkpoint and distributed settings.
    progress: Show a progress bar on stderr.
  """
  # Signals first, before JAX loads (see flaxae.signals).
  from flaxae.signals import StopRequest  # pylint: disable=import-outside-toplevel
  with StopRequest(exit_on_second=True) as stop:
    import jax  # pylint: disable=import-outside-toplevel
    from flaxae.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
    run = train_and_evaluate(cfg, progress=progress, stop=stop)
    return _report(run, jax.process_index() == 0)


def _report(run, speaks: bool) -> int:
  """The closing lines of ``train`` (from process 0 only: it speaks for the
  job) and its exit status (0, or 128 + the signal that interrupted it)."""
  if run.interrupted_by is not None:
    step = run.state.steps_done  # A collective for seeds split over processes: all ask.
    if speaks and step == 0:
      print("interrupted before the first step; nothing to save; run the same "
            "command to start", file=sys.stderr)
    elif speaks:
      print(f"interrupted at step {step}; checkpoint saved in "
            f"{run.dir.resolve()}; run the same command to resume", file=sys.stderr)
    return 128 + run.interrupted_by
  if not speaks:
    return 0
  last = run.history[-1] if run.history else {}
  summary = {k: round(v, 6) for k, v in last.items()
             if k.startswith("test/") and isinstance(v, (int, float))}
  print(f"run directory: {run.dir.resolve()}")
  if summary:
    from flaxae import io  # pylint: disable=import-outside-toplevel
    print("final epoch:", io.to_json(summary))  # (NaN as null.)
  return 0


_RunDir = Annotated[str, tyro.conf.arg(metavar="RUN_DIR"), tyro.conf.Positional]
_Output = Annotated[str, tyro.conf.arg(aliases=("-o",), metavar="FILE")]


def evaluate(run_dir: _RunDir, json_out: str = "", overwrite: bool = False,
             noise: Annotated[str, tyro.conf.arg(metavar="SPEC")] = "auto",
             seed_index: int = -1) -> None:
  """Evaluate a run on its test set: loss, BCE, MSE, PSNR and its kind's figures.

  Args:
    run_dir: The run directory.
    json_out: Also write the figures to this JSON file.
    overwrite: Replace ``json_out`` if it exists.
    noise: Also report the PSNR of the test images corrupted so
      (gaussian:0.5, mask:0.5, salt_pepper:0.1) and of their reconstructions;
      auto: a denoising run's own corruption, no noise for the others; none:
      no noise.
    seed_index: In a run of several seeds' models, evaluate only this one;
      -1: every model: each figure's mean, its ``_std`` and (in ``json_out``)
      its ``_per_seed`` values.
  """
  # pylint: disable=import-outside-toplevel
  from flaxae import io
  from flaxae.api import load
  from flaxae.train.rundir import own_data
  if not noise:
    raise ConfigError("--noise needs a corruption (gaussian:0.5, mask:0.5, salt_pepper:0.1), "
                      "auto or none")
  if json_out:
    io.check_output(json_out, overwrite)
  every = seed_index == -1
  run = load(run_dir, seed_index=0 if every else seed_index)
  test_x = own_data(run.dir, run.config, "its figures").test_x
  noise = None if noise == "auto" else noise
  if every:
    figures = run.evaluate_each(test_x, noise=noise)
  else:
    figures = run.evaluate(test_x, noise=noise)
  if json_out:
    io.write_json(json_out, figures, overwrite)
  shown = {k: v for k, v in figures.items() if not isinstance(v, list)}
  width = max(map(len, shown))
  for k, v in shown.items():
    print(f"{k:<{width}}  {v:.6f}")


COMMANDS = {"train": train, "eval": evaluate}


def _config_file(argv: list[str]) -> tuple[list[str], dict[str, typing.Callable]]:
  """``train`` and ``bench`` with ``--config=FILE``: that config becomes the
  defaults the other options override (tyro reads a partial's arguments as
  defaults); the commands and the arguments left for tyro."""
  if not argv or argv[0] not in CONFIG_COMMANDS:
    return argv, COMMANDS
  rest, path = argv[:1], None
  args = iter(argv[1:])
  for a in args:
    if a.startswith("--config="):
      path = a.split("=", 1)[1]
    elif a == "--config":
      path = next(args, "")
    else:
      rest.append(a)
  if path is None:
    return argv, COMMANDS
  if not path:
    raise ConfigError("--config needs a file: a run's config.json, or its run directory")
  # A run's settings, not how its job was launched (a multi-process run's
  # coordinator and process id would make a single process wait for peers).
  cfg = dataclasses.replace(config_lib.read(path), distributed=config_lib.DistributedConfig())
  # A run directory (or its config.json) is that run, wherever it is now: not
  # the folder its config names (a copied run would resume the original, a
  # moved one start again where it was).
  folder = Path(path) if Path(path).is_dir() else Path(path).parent
  if (folder / "run.json").is_file() or (folder / "checkpoints").is_dir():
    cfg = dataclasses.replace(cfg, run_dir=str(folder.absolute()))
  command = functools.partial(COMMANDS[argv[0]], cfg=cfg)
  return rest, {**COMMANDS, argv[0]: command}


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  argv = [a for a in argv if a != "--debug"]
  try:
    argv, commands = _config_file(argv)
    status = tyro.extras.subcommand_cli_from_dict(
        commands, args=argv, prog="flaxae", use_underscores=True, registry=_registry,
        description="Autoencoders in JAX/Flax. Add --debug to any command for tracebacks.")
  except FlaxaeError as e:
    if debug:
      raise
    print(f"flaxae: error: {e}", file=sys.stderr)
    # Background threads and asyncio tasks of a failed restore may complain
    # while the interpreter shuts down; the user has their one line already.
    sys.unraisablehook = lambda unraisable: None
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    return 2
  except KeyboardInterrupt as e:  # Ctrl-C outside training, or a second signal in it.
    if debug:
      raise
    print(f"flaxae: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
    return 128 + getattr(e, "signum", signal.SIGINT)
  return status if isinstance(status, int) else 0


def bench(cfg: Annotated[Config, tyro.conf.arg(name=""), tyro.conf.FlagConversionOff],
          batch_sizes: tuple[int, ...] = (), samples: int = 16384, reps: int = 5,
          json_out: str = "", overwrite: bool = False) -> None:
  """Measure your model's training and inference throughput on this machine.

  Trains on the configured data through the fused-epoch path
  (:mod:`flaxae.benchmark`); compile time apart, the median of ``reps``
  epochs of about ``samples`` examples, and % of a measured matmul peak.
  Only the data, model and train settings (and compilation_cache) are used:
  bench writes no run directory, so run_dir, profile, checkpoint and
  distributed are ignored. ``--config=FILE.json`` (a run's config.json, or its
  run directory) measures that run's settings; the other options override them.

  Args:
    cfg: The model, data and training settings to measure.
    batch_sizes: Batch sizes to try (default: train.batch_size).
    samples: Examples per timed epoch.
    reps: Timed epochs after the compiling one.
    json_out: Also write the records to this JSON file.
    overwrite: Replace ``json_out`` if it exists.
  """
  from flaxae.benchmark import user_benchmark  # pylint: disable=import-outside-toplevel
  user_benchmark(cfg, batch_sizes=batch_sizes, samples=samples, reps=reps, json_out=json_out,
                 overwrite=overwrite)


COMMANDS["bench"] = bench
CONFIG_COMMANDS = ("train", "bench")  # The commands that take --config=FILE.


def compress(run_dir: _RunDir,
             input_path: Annotated[str, tyro.conf.arg(metavar="INPUT"), tyro.conf.Positional],
             output: _Output, step: float = 0.5, overwrite: bool = False,
             json_out: str = "", seed_index: int = 0) -> None:
  """Compress images (.npy, .npz or IDX) to a binary file with a trained run.

  Prints the file's bits per pixel, compression ratio against raw uint8,
  PSNR and SSIM. The file format is described in ``flaxae.apps.container``.

  Args:
    run_dir: The run directory.
    input_path: The images: uint8, or float in [0, 1].
    output: The compressed file to write.
    step: Quantisation step of the codes (smaller: more bits, better images).
    overwrite: Replace ``output`` (and ``json_out``) if it exists.
    json_out: Also write the report to this JSON file.
    seed_index: Which model of a run of several seeds (train.num_seeds) to use.
  """
  # pylint: disable=import-outside-toplevel
  from flaxae import io
  from flaxae.apps import compress as compress_lib
  if json_out:
    io.check_output(json_out, overwrite)
    if os.path.realpath(json_out) == os.path.realpath(output):
      raise OutputError(f"--json_out and the compressed file are both {output}; name two files")
  report = compress_lib.compress_file(run_dir, input_path, output, step, overwrite,
                                      seed_index)
  if json_out:
    io.write_json(json_out, report.as_dict(), overwrite)
  print(f"wrote {output}: {report.file_bytes} bytes for {report.examples} examples, "
        f"{report.bits_per_pixel:.4f} bits per pixel, ratio {report.ratio:.2f} vs raw "
        f"uint8, PSNR {report.psnr:.2f} dB, SSIM {report.ssim:.4f}")


def decompress(run_dir: _RunDir,
               file: Annotated[str, tyro.conf.arg(metavar="FILE"), tyro.conf.Positional],
               output: _Output, overwrite: bool = False, seed_index: int = 0) -> None:
  """Restore the images of a file made by ``flaxae compress`` with the same run.

  Args:
    run_dir: The run directory that compressed the file.
    file: The compressed file.
    output: The images to write: FILE.npy, or FILE.idx / FILE-ubyte[.gz] for IDX.
    overwrite: Replace ``output`` if it exists.
    seed_index: Which model of a run of several seeds (train.num_seeds) to use.
  """
  from flaxae.apps import compress as compress_lib  # pylint: disable=import-outside-toplevel
  out = compress_lib.decompress_file(run_dir, file, output, overwrite, seed_index)
  print(f"wrote {output}: {out.dtype} array of shape {out.shape}")


COMMANDS["compress"] = compress
COMMANDS["decompress"] = decompress


def detect(run_dir: _RunDir,
           input_path: Annotated[str, tyro.conf.arg(metavar="INPUT"), tyro.conf.Positional],
           output: Annotated[str, tyro.conf.arg(aliases=("-o",), metavar="FILE")] = "",
           contamination: float = 0.1, threshold: float | None = None,
           metric: typing.Literal["mse", "l1", "bce"] = "mse",
           overwrite: bool = False, seed_index: int = 0) -> None:
  """Score examples by reconstruction error and flag the outliers.

  Without ``-o``, prints ``index,score,outlier`` rows (1: outlier) and a
  summary on stderr.

  Args:
    run_dir: The run directory.
    input_path: The examples (.npy, .npz or IDX): uint8, or float in [0, 1].
    output: Write the rows to FILE.csv, or an (N, 2) array to FILE.npy.
    contamination: Share of the run's training set above the threshold.
    threshold: The score above which an example is an outlier (instead of
      ``contamination``).
    metric: The per-example reconstruction error.
    overwrite: Replace ``output`` if it exists.
    seed_index: Which model of a run of several seeds (train.num_seeds) to use.
  """
  # pylint: disable=import-outside-toplevel
  from flaxae.apps import anomaly, arrays
  if output:
    anomaly.check_detection_output(output, overwrite)
  found = anomaly.detect(run_dir, arrays.read_array(input_path), contamination,
                         threshold, metric, seed_index)
  summary = (f"{int(found.outliers.sum())} of {len(found.scores)} examples are outliers "
             f"({metric} above {found.threshold:.6g})")
  if output:
    anomaly.write_detection(output, found, overwrite)
    print(f"wrote {output}: {summary}")
  else:
    print("index,score,outlier")
    for i, (s, o) in enumerate(zip(found.scores, found.outliers)):
      print(f"{i},{s:.9g},{o}")
    print(summary, file=sys.stderr)


COMMANDS["detect"] = detect


def embed(run_dir: _RunDir,
          input_path: Annotated[str, tyro.conf.arg(metavar="INPUT"), tyro.conf.Positional],
          output: _Output, overwrite: bool = False, seed_index: int = 0) -> None:
  """Write the codes of examples (.npy, .npz or IDX) to FILE.npy, one row each.

  Args:
    run_dir: The run directory.
    input_path: The examples: uint8, or float in [0, 1].
    output: The embeddings to write (N, code size), float32.
    overwrite: Replace ``output`` if it exists.
    seed_index: Which model of a run of several seeds (train.num_seeds) to use.
  """
  from flaxae.apps import features  # pylint: disable=import-outside-toplevel
  z = features.embed_file(run_dir, input_path, output, overwrite, seed_index)
  print(f"wrote {output}: {z.dtype} array of shape {z.shape}")


COMMANDS["embed"] = embed


def plot(run_dir: _RunDir,
         what: Annotated[typing.Literal["latent", "grid", "interpolate", "traverse", "samples",
                                        "reconstructions", "loss"],
                         tyro.conf.arg(metavar="WHAT"), tyro.conf.Positional],
         output: _Output, n: int = 0, method: str = "",
         examples: tuple[int, ...] = (0, 1), seed: int = 0, overwrite: bool = False,
         seed_index: int = 0) -> None:
  """Draw a picture of a trained run: its latent space, generations, reconstructions.

  WHAT: ``latent`` (the test codes in 2-D, coloured by label), ``grid`` (decoded
  latent plane), ``interpolate`` (between two test examples), ``traverse`` (one
  code dimension at a time), ``samples`` (a VAE's prior), ``reconstructions``,
  ``loss`` (training curves). See ``flaxae.apps.pictures``.

  Args:
    run_dir: The run directory.
    what: The picture.
    output: The file (.png, .pdf or .svg).
    n: How many test codes (latent), grid side, steps or images; 0: the
      picture's default.
    method: latent: auto, pca, tsne or direct; interpolate: linear or slerp.
    examples: Test examples: interpolate's two ends, traverse's start.
    seed: Seed of samples, of t-SNE and of latent's choice of codes.
    overwrite: Replace ``output`` if it exists.
    seed_index: Which model of a run of several seeds (train.num_seeds) to draw.
  """
  # pylint: disable=import-outside-toplevel
  from flaxae import io
  from flaxae.api import load
  from flaxae.apps import pictures
  io.check_output(output, overwrite)
  run = load(run_dir, seed_index=seed_index)
  pictures.draw(run, what, output, n=n, method=method, examples=examples, seed=seed)
  print(f"wrote {output}: {what} of {run.dir}")


COMMANDS["plot"] = plot


if __name__ == "__main__":
  sys.exit(main())
