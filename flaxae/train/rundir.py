"""The run directory's files and the rules of resuming one.

A run directory holds ``config.json`` (the full config), ``run.json`` (the data's
shape and digest, the steps per epoch) and ``checkpoints/``. It resumes only
the run that made it: the same data, model and training settings (``epochs``
may change under a constant learning rate), checked before anything in it is
written; one without a finished checkpoint has nothing to resume. One
training at a time uses it (:func:`exclusive`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

try:
  import fcntl
except ImportError:  # Not a POSIX system: no lock.
  fcntl = None

from flaxae import config as config_lib
from flaxae.config import Config
from flaxae.data.sources import DEFAULT_DIRS
from flaxae.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"


def check_resumable(saved: Config, cfg: Config, run_dir: Path) -> None:
  """A run directory only resumes the run that made it. ``train.epochs`` may
  change under a constant learning rate (a schedule that decays over the
  epochs would change the steps already taken)."""
  mine = config_lib.to_dict(cfg)
  theirs = config_lib.to_dict(saved)
  diffs = []
  for section in ("data", "model", "train"):
    for key, value in mine[section].items():
      if section == "train" and key == "epochs" and cfg.train.schedule == "constant":
        continue
      if theirs[section].get(key) != value:
        diffs.append(f"{section}.{key}: {theirs[section].get(key)!r} → {value!r}")
  if any(d.startswith("train.epochs:") for d in diffs):
    diffs.append(f"train.schedule={cfg.train.schedule} spreads its learning rates over "
                 "train.epochs, so the epochs cannot change")
  if diffs:
    raise CheckpointError(
        f"run directory {run_dir} was made with another config ({'; '.join(diffs)}); "
        "use a new --run_dir or the same settings")


@contextlib.contextmanager
def exclusive(run_dir: Path, enabled: bool = True) -> Iterator[None]:
  """Holds ``run_dir`` for one training at a time on this machine (threads of
  one process, or processes): a second one raises a CheckpointError instead of
  mixing its checkpoints and metrics with the first's. The lock is a file
  outside the run directory, so that nothing is written in it before the run
  is checked; the system drops it when the process ends, however it ends.
  ``enabled``: False for the processes of a multi-host job but the first."""
  if not enabled or fcntl is None:
    yield
    return
  folder = Path(tempfile.gettempdir()) / f"flaxae-locks-{os.getuid()}"
  folder.mkdir(exist_ok=True)
  name = hashlib.sha256(str(Path(run_dir).absolute()).encode()).hexdigest()[:32]
  with open(folder / f"{name}.lock", "w", encoding="utf-8") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise CheckpointError(
          f"run directory {run_dir} is in use by another training (in this process or "
          "another); wait for it to end, or use another --run_dir") from None
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def absolute_data_paths(cfg: Config) -> Config:
  """``cfg`` with its data file or folder as an absolute path (the default
  folder of mnist / fashion_mnist too, where it exists), so that the run
  directory can be evaluated, used and resumed from any working directory."""
  data = cfg.data
  folder = data.dir
  if not folder and data.name in DEFAULT_DIRS and Path(DEFAULT_DIRS[data.name]).is_dir():
    folder = DEFAULT_DIRS[data.name]
  data = dataclasses.replace(data, dir=os.path.abspath(folder) if folder else "",
                             path=os.path.abspath(data.path) if data.path else "")
  return dataclasses.replace(cfg, data=data)


def read_config(run_dir: str | Path) -> Config:
  path = Path(run_dir) / CONFIG_FILE
  if not path.exists():
    raise CheckpointError(f"{run_dir} is not a flaxae run directory (no {CONFIG_FILE})")
  return config_lib.read(path, error=CheckpointError)


def own_data(run_dir: Path, cfg: Config, use: str) -> Any:
  """The data set ``cfg.data`` names (:func:`flaxae.data.load_dataset`),
  refused if it is not the one the run in ``run_dir`` trained on (``run.json``'s
  digests): what ``use`` computes from it would not be the run's."""
  # pylint: disable=import-outside-toplevel
  from flaxae.data import load_dataset
  from flaxae.data.digest import data_digest, test_set_digest
  ds = load_dataset(cfg.data)
  now = {"data_digest": data_digest(ds.train_x, ds.test_x), "num_test": len(ds.test_x),
         "test_digest": test_set_digest(ds.test_x)}
  check_same_data(run_dir, now, advice=f"{use} on this data would not be the run's "
                                       f"(see {RUN_FILE})")
  return ds


def has_checkpoint(run_dir: Path) -> bool:
  """Whether ``run_dir`` holds a finished checkpoint (a folder named by its
  step; Orbax renames it so when complete). A directory without one (a first
  attempt that stopped before its first save) has nothing to resume, and is
  reused as it is. Read from the file system, not by Orbax, whose manager
  synchronises the processes of a multi-host job: only some of them may ask."""
  return bool(checkpoint_steps(run_dir))


def check_run_dir(run_dir: Path) -> None:
  """Refuses a run directory that cannot be one: it, or a folder above it, or
  its ``checkpoints``, is a file (found before anything trains)."""
  for path in (run_dir, *run_dir.parents):
    if path.exists():
      if not path.is_dir():
        raise ConfigError(f"run directory {run_dir}: {path} is a file, not a folder")
      break
  folder = run_dir / CHECKPOINT_DIR
  if folder.exists() and not folder.is_dir():
    raise CheckpointError(f"{folder} is a file, not a folder of checkpoints; move it away "
                          "or use another --run_dir")


def checkpoint_steps(run_dir: str | Path) -> list[int]:
  """The steps of ``run_dir``'s finished checkpoints (see :func:`has_checkpoint`)."""
  folder = Path(run_dir) / CHECKPOINT_DIR
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def check_same_data(run_dir: Path, info: dict[str, Any],
                    advice: str = "use a new --run_dir or the run's own data") -> None:
  """Refuses to resume (or evaluate) a run directory on data other than its own."""
  path = run_dir / RUN_FILE
  try:
    saved = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path} is damaged ({e}); restore it from a copy, or use a "
                          "new --run_dir") from e
  diffs = [f"{key}: {saved[key]} → {value}" for key, value in info.items()
           if key in saved and key != "fingerprint" and saved[key] != value]
  if diffs:
    raise CheckpointError(
        f"run directory {run_dir} was trained on other data ({'; '.join(diffs)}); "
        f"{advice}")
