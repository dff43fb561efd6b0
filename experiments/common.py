"""What the experiments share: paths, runs, outputs and tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

# The programs' argument types (the benchmarks' own: integers, lists, names).
from benchmarks.common import names_in, non_negative_int, positive_int, positive_ints
from flaxae import io
from flaxae.api import Run, fit, load
from flaxae.config import Config, DataConfig
from flaxae.errors import FlaxaeError

__all__ = ["names_in", "non_negative_int", "positive_int", "positive_ints"]  # For the experiments.

ROOT = Path(__file__).resolve().parents[1]
# The real data sets: ../shared/data beside the repository, or $FLAXAE_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("FLAXAE_SHARED_DATA") or ROOT.parent / "shared" / "data")
FASHION = SHARED_DATA / "fashion_mnist"
MNIST = SHARED_DATA / "mnist_test"
OUT = ROOT / "experiments" / "out"
FIGURES = ROOT / "experiments" / "figures"


def parser(description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--quick", action="store_true",
                 help="a tiny budget (seconds): for smoke tests, numbers mean little")
  p.add_argument("--out", default="", help="output folder (default experiments/out/NAME)")
  p.add_argument("--seed", type=int, default=0)
  return p


def cli(main: Callable[[], Any]) -> None:
  """Runs an experiment's ``main`` as a program: a flaxae error (missing data,
  an unwritable output folder, a bad setting) ends it with one line and exit
  status 2 instead of a traceback."""
  try:
    main()
  except FlaxaeError as e:
    prog = Path(sys.argv[0]).stem
    hint = (f" (the real data sets are read from {SHARED_DATA}; set FLAXAE_SHARED_DATA "
            f"to another folder)" if type(e).__name__ == "DataError" else "")
    print(f"{prog}: error: {e}{hint}", file=sys.stderr)
    sys.exit(2)


def quick_data(data: DataConfig, train: int, test: int) -> DataConfig:
  """``data`` cut to ``train`` / ``test`` examples, for ``--quick`` runs."""
  return dataclasses.replace(data, limit_train=train, limit_test=test)


def out_dir(name: str, args: argparse.Namespace) -> Path:
  folder = Path(args.out) if args.out else OUT / (f"{name}-quick" if args.quick else name)
  return io.make_dir(folder)


def runs_dir(args: argparse.Namespace) -> Path:
  """Where the experiments keep their trained runs (reused across experiments)."""
  return (Path(args.out) if args.out else OUT) / "runs"


def get_run(cfg: Config) -> Run:
  """The finished run of ``cfg``: loaded if its directory holds every epoch,
  else trained (or resumed)."""
  run_dir = Path(cfg.resolved_run_dir())
  if (run_dir / "metrics.jsonl").exists():
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    if lines and json.loads(lines[-1]).get("epoch") == cfg.train.epochs:
      return load(run_dir)
  start = time.perf_counter()
  fit(cfg, progress=False)
  print(f"trained {run_dir} in {time.perf_counter() - start:.0f} s", flush=True)
  return load(run_dir)


def command(name: str, argv: Sequence[str] | None) -> str:
  """The command line that ran experiment ``name``, for its JSON."""
  args = sys.argv[1:] if argv is None else list(argv)
  return " ".join(["python -m experiments." + name, *args])


def write_json(path: Path, obj: Any) -> None:
  io.write_json(path, obj)
  print(f"wrote {path}")


def publish(paths: Iterable[Path], args: argparse.Namespace) -> None:
  """Copies figures of a full run to ``experiments/figures/`` (not for --quick)."""
  if args.quick or args.out:
    return
  io.make_dir(FIGURES)
  for p in paths:
    with io.atomic_path(FIGURES / p.name) as tmp:
      shutil.copyfile(p, tmp)
    print(f"published {FIGURES / p.name}")


def fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
  return str(v)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
  """A Markdown table of ``rows`` (dicts) with ``columns``."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
  return "\n".join(lines)
