"""``train_and_evaluate``: config → data → model + objective → step → loop.

Thin by design: each labelled section hands one thing to the next. The loop
runs compiled chunks of steps (a whole epoch by default), reads metrics once
per chunk, evaluates and logs once per epoch, and checkpoints on a fixed
schedule of steps so that an interrupted run, resumed, follows exactly the
same sequence of compiled calls and ends bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from flaxae import config as config_lib
from flaxae import io, objectives
from flaxae.checkpoint import Checkpointer
from flaxae.config import Config
from flaxae.data import Dataset, load_dataset
from flaxae.data import compact, stream
from flaxae.data.digest import data_digest, test_set_digest
from flaxae.errors import CheckpointError, ConfigError, OutputError, TrainingError
from flaxae.signals import StopRequest
from flaxae.train import distributed, parallel
from flaxae.train.build import setup
from flaxae.train.compilation import CompileClock, compilation_cache
from flaxae.train.logger import MetricsLogger
from flaxae.train.restore import check_finite
from flaxae.train.rundir import (
    CHECKPOINT_DIR, CONFIG_FILE, RUN_FILE, absolute_data_paths, check_resumable, check_run_dir,
    check_same_data, exclusive, has_checkpoint, read_config)
from flaxae.train.seeds import across_seeds, each_seed_variables, seed_variables
from flaxae.train.step import eval_step, summarize_eval

if TYPE_CHECKING:
  from flaxae.api import Run


@dataclasses.dataclass
class Schedule:
  """Where compiled calls end: epoch ends, call boundaries and checkpoints."""

  steps_per_epoch: int
  total_steps: int
  steps_per_call: int
  checkpoint_every: int

  def next_stop(self, step: int) -> int:
    spe = self.steps_per_epoch
    epoch_end = (step // spe + 1) * spe
    stops = [epoch_end, self.total_steps]
    if self.steps_per_call:
      in_epoch = step % spe
      stops.append(step - in_epoch + (in_epoch // self.steps_per_call + 1) * self.steps_per_call)
    if self.checkpoint_every:
      stops.append((step // self.checkpoint_every + 1) * self.checkpoint_every)
    return min(stops)

  def is_checkpoint(self, step: int) -> bool:
    if step == self.total_steps:
      return True
    if self.checkpoint_every:
      return step % self.checkpoint_every == 0
    return step % self.steps_per_epoch == 0


class _EpochProfiler:
  """A ``jax.profiler`` trace of one epoch: the second (the first compiles), or
  the first when the run has only one."""

  def __init__(self, folder: Path, schedule: Schedule):
    spe = schedule.steps_per_epoch
    self.folder = folder
    self.start = spe if schedule.total_steps >= 2 * spe else 0
    self.end = self.start + spe
    self.state = "waiting"

  def before(self, step: int) -> None:
    if self.state == "waiting" and self.start <= step < self.end:
      jax.profiler.start_trace(str(self.folder))
      self.state = "tracing"

  def after(self, step: int, state: Any) -> None:
    if self.state == "tracing" and step >= self.end:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self.state == "tracing":
      jax.profiler.stop_trace()
      self.state = "done"


def train_and_evaluate(cfg: Config, *, progress: bool = True,
                       stop_after_steps: int | None = None,
                       stop: StopRequest | None = None) -> "Run":
  """Trains (or resumes) the run ``cfg`` describes and evaluates it.

  Args:
    cfg: The run's config.
    progress: Show a progress bar on stderr.
    stop_after_steps: Stop (with a checkpoint) once this many steps are done;
      for tests of interruption and for time-boxed jobs.
    stop: The signals' stop request, if the caller took them over earlier
      (the command line, from its start); by default one for this run.

  Returns:
    The trained :class:`~flaxae.api.Run`.
  """
  cfg = config_lib.validate(cfg)
  distributed.initialize(cfg.distributed)
  # Paths absolute, in config.json too: a run is used and resumed from anywhere.
  run_dir = Path(cfg.resolved_run_dir()).absolute()
  check_run_dir(run_dir)
  # Signals are taken over from here (again, if the caller took them earlier:
  # joining the distributed runtime installs JAX's own SIGTERM handler); one
  # during start-up stops the run before its first step.
  stop = stop or StopRequest()
  with (stop, CompileClock() as compiling,
        compilation_cache(cfg.compilation_cache),
        exclusive(run_dir, enabled=distributed.is_main_process())):
    return _train_and_evaluate(cfg, run_dir, stop, compiling, progress=progress,
                               stop_after_steps=stop_after_steps)


def _train_and_evaluate(cfg: Config, run_dir: Path, stop: StopRequest,
                        compiling: CompileClock, *, progress: bool,
                        stop_after_steps: int | None) -> "Run":
  from flaxae.api import Run  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  # --- Config, data, mesh, model: everything checked before anything is written
  main_process = distributed.is_main_process()
  cfg = dataclasses.replace(absolute_data_paths(cfg), run_dir=str(run_dir))
  resuming = has_checkpoint(run_dir)
  if resuming and not (run_dir / CONFIG_FILE).exists():
    raise CheckpointError(
        f"run directory {run_dir} has checkpoints but no {CONFIG_FILE} to check a resume "
        "against; restore the file or use a new --run_dir")
  if resuming:  # (Runs saved before paths were absolute: theirs as seen from here.)
    check_resumable(absolute_data_paths(read_config(run_dir)), cfg, run_dir)
  if cfg.data.stream:  # The training set stays in its file, memory-mapped.
    if cfg.train.num_seeds > 1:
      raise ConfigError("data.stream reads one data order; set train.num_seeds=1 "
                        "or drop data.stream")
    train_set, test_x = stream.open_mapped(cfg.data)
    feature_shape = train_set.feature_shape
  else:
    ds: Dataset = load_dataset(cfg.data)
    train_set, test_x, feature_shape = ds.train_x, ds.test_x, ds.feature_shape
  digest = data_digest(train_set, test_x)
  distributed.check_same_job(cfg, train_set, test_x)  # Before any collective that would hang.
  num_train, batch_size = len(train_set), cfg.train.batch_size
  built = setup(cfg, feature_shape, num_train)
  mesh, model, objective, state_sharding = (built.mesh, built.model, built.objective,
                                            built.state_sharding)
  steps_per_epoch = num_train // batch_size
  schedule = Schedule(
      steps_per_epoch=steps_per_epoch,
      total_steps=steps_per_epoch * cfg.train.epochs,
      steps_per_call=cfg.train.steps_per_call,
      checkpoint_every=cfg.checkpoint.every_steps)

  info = {
      "feature_shape": list(feature_shape),
      "steps_per_epoch": schedule.steps_per_epoch,
      "num_train": num_train, "num_test": len(test_x),
      "data_digest": digest,
      "test_digest": test_set_digest(test_x),
      "fingerprint": config_lib.fingerprint(cfg),
  }
  if resuming and (run_dir / RUN_FILE).exists():
    check_same_data(run_dir, info)

  # --- Evaluation ---------------------------------------------------------------
  eval_jit = parallel.make_eval(
      functools.partial(eval_step, model=model, objective=objective, cfg=cfg.model,
                        rng=jax.random.key(cfg.train.seed),
                        noise=objectives.eval_noise(cfg.model)), mesh)
  summarize = functools.partial(summarize_eval, cfg=cfg.model)

  # --- State: restored, or born sharded -------------------------------------
  ckpt = Checkpointer(run_dir / CHECKPOINT_DIR, keep=cfg.checkpoint.keep)
  logger = MetricsLogger(run_dir, enabled=main_process)
  epoch_sums: dict[str, Any] = {}  # The current epoch's summed train figures.
  epoch_steps = 0
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(built.abstract)
    try:
      check_finite(state.params, run_dir, meta.get("step"))
    except CheckpointError:
      ckpt.close()
      raise
    epoch_steps = meta.get("epoch_steps", 0)  # A checkpoint inside an epoch.
    epoch_sums = {k: np.asarray(v, np.float64) for k, v in meta.get("epoch_sums", {}).items()}
  else:
    state = jax.jit(built.init, out_shardings=state_sharding)()
  step = state.steps_done
  if step > schedule.total_steps:
    ckpt.close()
    raise CheckpointError(
        f"run directory {run_dir} has trained to step {step} "
        f"({step / steps_per_epoch:g} epochs of {steps_per_epoch} steps); "
        f"train.epochs={cfg.train.epochs} ends at step {schedule.total_steps}")

  # --- Run directory: written once the run is known to resume (or begin) -----
  if main_process:
    io.make_dir(run_dir)
    io.write_json(run_dir / CONFIG_FILE, config_lib.to_dict(cfg))
    io.write_json(run_dir / RUN_FILE, info)
  history = logger.truncate(step)
  orders = parallel.EpochOrders(state.rng, num_train, batch_size, mesh, cfg.train.num_seeds)
  if cfg.data.stream:  # The same orders, read from the file by the host.
    stream_chunk = parallel.make_stream_chunk(
        built.step_fn, mesh, cfg.train.strategy, state_sharding=state_sharding,
        prepare=train_set.on_device, cpu_matmuls=cfg.train.cpu_matmuls)
    feeder = stream.Feeder(train_set, orders.host, batch_size, parallel.chunk_sharding(mesh))
    run_chunk = lambda state, step, n: stream_chunk(state, feeder.get(step, n))
  else:
    feeder = None
    # Images that came as bytes stay bytes on the devices (a quarter of the memory).
    train_data = parallel.put(compact.compact(train_set), parallel.replicated(mesh))
    run_chunk = lambda state, step, n: built.chunk(state, train_data, orders(step), n)

  # --- Loop -----------------------------------------------------------------
  bar = tqdm(total=schedule.total_steps, initial=step, unit="step",
             disable=not progress or not main_process, file=sys.stderr,
             dynamic_ncols=True)
  # This process's steps of the epoch, their time and the compilation in it.
  epoch_start, timed_steps, compiled = time.perf_counter(), 0, compiling.seconds
  limit = schedule.total_steps if stop_after_steps is None else min(
      stop_after_steps, schedule.total_steps)
  profiler = _EpochProfiler(run_dir / "profile", schedule) if (
      cfg.profile and main_process) else None
  finished = False
  try:
    # The signal every process stops for: one that came during start-up?
    stopping = stop.agreed() if step < limit else None
    while step < limit and stopping is None:
      end = min(schedule.next_stop(step), limit)
      if feeder is not None:  # Read the next chunk while this one trains.
        feeder.prefetch(end, min(schedule.next_stop(end), limit) - end)
      if profiler is not None:
        profiler.before(step)
      state, metrics = run_chunk(state, step, end - step)
      if profiler is not None:
        profiler.after(end, state)
      metrics = jax.device_get(metrics)
      n = end - step
      for k, v in metrics.items():  # Per seed: (S,) arrays, or scalars.
        epoch_sums[k] = epoch_sums.get(k, 0.0) + np.asarray(v, np.float64) * n
      epoch_steps += n
      timed_steps += n
      step = end
      bar.update(n)
      bar.set_postfix(loss=f"{float(np.mean(metrics['loss'])):.4f}")
      bad_streak = int(np.max(jax.device_get(parallel.fetch(state.bad_streak))))
      if bad_streak >= cfg.train.max_bad_steps:
        kept = (f"the checkpoints before them are kept in {ckpt.directory}"
                if ckpt.latest_step() is not None else "no checkpoint was written")
        raise TrainingError(
            f"stopped: the last {bad_streak} steps had a non-finite loss or gradient "
            f"and left the parameters unchanged (train.max_bad_steps="
            f"{cfg.train.max_bad_steps}, checked after each compiled chunk of steps); "
            f"{kept}. Lower train.learning_rate or set train.clip_norm (in a new "
            "--run_dir: a run resumes only with its own settings), or check the data")
      if step % schedule.steps_per_epoch == 0:
        seconds = time.perf_counter() - epoch_start
        compile_s = compiling.seconds - compiled
        test = [parallel.evaluate(eval_jit, variables, test_x,
                                  cfg.train.eval_batch_size, mesh.devices.size,
                                  summarize)
                for variables in each_seed_variables(state)]
        record = {
            "step": step, "epoch": step // schedule.steps_per_epoch,
            **across_seeds({f"train/{k}": v / epoch_steps for k, v in epoch_sums.items()}),
            **across_seeds({f"test/{k}": test[0][k] if len(test) == 1
                            else np.array([t[k] for t in test]) for k in test[0]}),
            "samples_per_s": (timed_steps * batch_size * cfg.train.num_seeds
                              / max(seconds - compile_s, 1e-9)),
            "seconds": seconds, "compile_s": compile_s,
        }
        history.append(record)
        logger.write(record)
        bar.set_postfix(loss=f"{record['train/loss']:.4f}",
                        test=f"{record['test/loss']:.4f}",
                        sps=f"{record['samples_per_s']:.0f}")
        epoch_sums, epoch_steps = {}, 0
        epoch_start, timed_steps, compiled = time.perf_counter(), 0, compiling.seconds
      stopping = stop.agreed()  # After the evaluation: a signal during it counts.
      if schedule.is_checkpoint(step) or step == limit or stopping is not None:
        ckpt.save(step, state, _meta(cfg, step, schedule, epoch_sums, epoch_steps))
    finished = True
    if step == schedule.total_steps:  # A signal during the last call: the run is done.
      stopping = None
  finally:
    if profiler is not None:
      profiler.close()
    bar.close()
    try:
      ckpt.close()
    except OutputError:
      if finished:  # Else the error on its way out is the one to report.
        raise
    finally:
      if feeder is not None:
        feeder.close()
      logger.close()

  variables = seed_variables(state, 0)
  if jax.process_count() > 1:  # Host copies: the global arrays span other processes.
    variables = jax.device_get(variables)
  run = Run(run_dir, cfg, model, variables,
            history, state=state, interrupted_by=stopping)
  # --- Outputs --------------------------------------------------------------
  if step == schedule.total_steps:
    # Every process gathers the models (a collective); one writes.
    models = each_seed_variables(state) if cfg.train.num_seeds > 1 else None
    if main_process:
      run.write_outputs(test_x, models=models)
  return run


def _meta(cfg: Config, step: int, schedule: Schedule, epoch_sums: dict[str, Any],
          epoch_steps: int) -> dict[str, Any]:
  """The checkpoint's JSON item: the config and the progress, with the current
  epoch's summed train figures so far (exact in JSON: float64), so that an
  epoch resumed in its middle reports the figures of all its steps."""
  return {
      "step": step,
      "epoch": step // schedule.steps_per_epoch,
      "step_in_epoch": step % schedule.steps_per_epoch,
      "steps_per_epoch": schedule.steps_per_epoch,
      "epoch_steps": epoch_steps,
      "epoch_sums": {k: np.asarray(v, np.float64).tolist() for k, v in epoch_sums.items()},
      "config": config_lib.to_dict(cfg),
  }
