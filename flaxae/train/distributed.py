"""Multi-process start-up: ``jax.distributed`` from the config or the environment.

Every process runs the same program; the mesh spans all processes' devices;
checkpoints are written by all processes (Orbax coordinates the commit);
logs, progress bars and files come from process 0 only.
"""

from __future__ import annotations

import jax

from flaxae.config import DistributedConfig
from flaxae.errors import ConfigError


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


def is_main_process() -> bool:
  """Whether this process logs and writes files (process 0)."""
  return jax.process_index() == 0
