"""A run directory's trained state, loaded for use (not for resuming, which the
loop does itself): checked against the config it was saved with, and finite."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from flaxae import config as config_lib
from flaxae.checkpoint import Checkpointer
from flaxae.config import Config
from flaxae.errors import CheckpointError
from flaxae.models import Autoencoder
from flaxae.train import parallel
from flaxae.train.build import build
from flaxae.train.rundir import CHECKPOINT_DIR, CONFIG_FILE, RUN_FILE, read_config
from flaxae.train.state import TrainState


def restore_state(run_dir: str | Path, cfg: Config | None = None,
                  step: int | None = None) -> tuple[Config, Autoencoder, TrainState, dict]:
  """Config, model and train state of a run directory's checkpoint."""
  run_dir = Path(run_dir)
  from_file = cfg is None
  cfg = cfg or read_config(run_dir)
  info_path = run_dir / RUN_FILE
  if not info_path.exists():
    raise CheckpointError(f"{run_dir} has no {RUN_FILE}; was it trained?")
  try:
    info = json.loads(info_path.read_text())
    feature_shape = tuple(int(s) for s in info["feature_shape"])
    steps_per_epoch = int(info["steps_per_epoch"])
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{info_path} is damaged ({type(e).__name__}: {e}); restore it "
                          "from a copy: the run is neither used nor resumed without it") from e
  mesh = parallel.make_mesh(1)
  # The restored model computes with XLA's products however it was trained (the
  # parameters are the same): loading a run needs neither MKL nor a compiler.
  portable = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, cpu_matmuls="xla"))
  model, _, _, _, abstract = build(
      portable, feature_shape, steps_per_epoch, mesh)
  ckpt = Checkpointer(run_dir / CHECKPOINT_DIR, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise CheckpointError(f"no checkpoint in {run_dir / CHECKPOINT_DIR}; train first")
    if from_file:
      check_saved_model(cfg, ckpt.meta(step), run_dir)
    state, meta = ckpt.restore(abstract, step)
  finally:
    ckpt.close()
  check_finite(state.params, run_dir, meta.get("step", step))
  return cfg, model, state, meta


def check_saved_model(cfg: Config, meta: dict[str, Any], run_dir: Path) -> None:
  """Refuses a config.json whose model or training settings are not the ones
  the checkpoint was saved with (edited since): its state would not fit (other
  widths, another number of seeds), or would load into another function
  (another activation, another compute dtype) without a word. ``train.epochs``
  may differ (a resumed run's earlier checkpoints have fewer)."""
  try:
    saved = config_lib.from_dict(meta["config"])
  except Exception:  # pylint: disable=broad-except
    return  # A checkpoint without a readable config: nothing to compare.
  differ = []
  for section in ("model", "train"):
    mine = config_lib.to_dict(getattr(cfg, section))
    theirs = config_lib.to_dict(getattr(saved, section))
    differ += [(f"{section}.{k}", theirs.get(k), mine.get(k))
               for k in sorted(mine.keys() | theirs.keys())
               if mine.get(k) != theirs.get(k) and f"{section}.{k}" != "train.epochs"]
  if differ:
    shown = "; ".join(f"{key}: {theirs!r} in the checkpoint, {mine!r} in config.json"
                      for key, theirs, mine in differ[:4])
    raise CheckpointError(
        f"{run_dir / CONFIG_FILE} does not describe the run its checkpoint holds "
        f"({shown}); was it edited? Put the checkpoint's values back")


def check_finite(params: Any, run_dir: Path, step: Any) -> None:
  """Refuses parameters with NaN or Inf: the checkpoint's files were damaged
  (a step with a non-finite loss or gradient leaves the parameters unchanged),
  or an update overflowed them (a learning rate far too large)."""
  bad = [jax.tree_util.keystr(path) for path, leaf in jax.tree.leaves_with_path(params)
         if not bool(jnp.all(jnp.isfinite(leaf)))]
  if bad:
    raise CheckpointError(
        f"checkpoint {step} in {run_dir / CHECKPOINT_DIR} holds NaN or Inf in "
        f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}: its files are damaged, or "
        "its training diverged (see train/skipped in metrics.jsonl); delete that step's "
        "folder to fall back to an earlier one")
