"""Multi-process start-up: ``jax.distributed`` from the config or the environment.

Every process runs the same program; the mesh spans all processes' devices;
checkpoints are written by all processes (Orbax coordinates the commit);
logs, progress bars and files come from process 0 only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from flaxae import config as config_lib
from flaxae.config import Config, DistributedConfig
from flaxae.data.digest import content_digest
from flaxae.errors import ConfigError, DataError


def initialize(cfg: DistributedConfig) -> None:
  """Joins the distributed runtime once per process (a no-op when disabled)."""
  if not cfg.enabled or jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
  kwargs = {}
  if cfg.coordinator:
    kwargs["coordinator_address"] = cfg.coordinator
  if cfg.num_processes:
    kwargs["num_processes"] = cfg.num_processes
  if cfg.process_id >= 0:
    kwargs["process_id"] = cfg.process_id
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    raise ConfigError(
        f"cannot join the distributed runtime ({str(e).splitlines()[0]}); set "
        "distributed.coordinator, distributed.num_processes and distributed.process_id, "
        "or run under a cluster manager JAX detects") from e


# What every process of a job must share, each compared on its own so that the
# error names it. Paths and caches may differ between hosts (the data's
# contents are compared instead); the distributed section differs by design.
_SHARED = {
    "model": lambda d: d["model"],
    "train": lambda d: d["train"],
    "checkpoint": lambda d: d["checkpoint"],
    "data": lambda d: {k: v for k, v in d["data"].items() if k not in ("dir", "path")},
}


def check_same_job(cfg: Config, train_set: Any, test_x: np.ndarray) -> None:
  """Refuses a job whose processes were started with other settings or other
  data: they would train different models under one name, or hang in a
  collective. A collective itself (every process must call it); a no-op in a
  single process.

  Raises:
    ConfigError: a model, train, checkpoint or data setting differs.
    DataError: the data's contents differ (:func:`flaxae.data.digest.content_digest`).
  """
  if jax.process_count() == 1:
    return
  settings = config_lib.to_dict(cfg)
  parts = [json.dumps(part(settings), sort_keys=True).encode() for part in _SHARED.values()]
  parts.append(content_digest(train_set, test_x))
  mine = np.stack([np.frombuffer(hashlib.blake2b(p, digest_size=8).digest(), np.uint8)
                   for p in parts])
  try:  # The job's first collective: where a process that failed to start is missed.
    every = np.asarray(multihost_utils.process_allgather(mine))  # (processes, parts, 8)
  except jax.errors.JaxRuntimeError as e:
    raise ConfigError(
        f"process {jax.process_index()} of {jax.process_count()}: the other processes of "
        "this job did not all reach the start-up check (one failed before it: see its own "
        f"error; or started too late): {str(e).splitlines()[0][:200]}") from e
  differ = [i for i in range(len(parts)) if (every[:, i] != every[0, i]).any()]
  if not differ:
    return
  others = sorted({p for i in differ for p in range(len(every))
                   if (every[p, i] != every[0, i]).any()})
  who = f"process(es) {', '.join(map(str, others))} against process 0"
  names = [name for i, name in enumerate(_SHARED) if i in differ]
  if names:
    raise ConfigError(
        f"the processes of this job were started with different settings ({who}: "
        f"{', '.join(names)}); start every process with the same options (only the "
        "distributed ones differ)")
  raise DataError(
      f"the processes of this job read different data ({who}: other contents or "
      "shapes); give every process the same data set")


def is_main_process() -> bool:
  """Whether this process logs and writes files (process 0)."""
  return jax.process_index() == 0
