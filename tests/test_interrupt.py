"""Interruptions: Ctrl-C/SIGTERM save and resume; kill -9 at any moment loses
nothing; the resumed run ends bit-identical to an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import flaxae

ARGS = ["--model.widths=64,32,8", "--train.batch_size=64", "--train.epochs=30",
        "--checkpoint.every_steps=10", "--checkpoint.keep=2", "--no-progress"]


def _start(run_dir: Path) -> subprocess.Popen:
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  return subprocess.Popen(
      [sys.executable, "-m", "flaxae.cli", "train", f"--run_dir={run_dir}", *ARGS],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(cond, proc, timeout=120.0):
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if cond():
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.005)
  raise TimeoutError("condition not reached")


def _steps(run_dir: Path) -> list[int]:
  folder = run_dir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) \
      if folder.is_dir() else []


def _saving(run_dir: Path) -> bool:
  folder = run_dir / "checkpoints"
  return folder.is_dir() and any("tmp" in p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("ref") / "run"
  proc = _start(run_dir)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  return flaxae.load(run_dir)


def _assert_same(run_dir: Path, reference):
  run = flaxae.load(run_dir)
  assert int(run.state.step) == int(reference.state.step)
  jax.tree.map(np.testing.assert_array_equal, run.state.params, reference.state.params)
  jax.tree.map(np.testing.assert_array_equal, run.state.opt_state,
               reference.state.opt_state)
  epochs = [json.loads(l)["epoch"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert epochs == list(range(1, 31))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_then_resumes_bit_identical(tmp_path, reference, sig):
  run_dir = tmp_path / "run"
  proc = _start(run_dir)
  assert _wait_for(lambda: len(_steps(run_dir)) >= 1, proc)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + sig, err
  assert "interrupted at step" in err and "Traceback" not in err
  stopped_at = _steps(run_dir)[-1]
  assert 0 < stopped_at < 660
  proc = _start(run_dir)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  _assert_same(run_dir, reference)


def test_kill_9_at_three_moments_resumes_bit_identical(tmp_path, reference):
  run_dir = tmp_path / "run"
  moments = [
      ("while compiling, before any checkpoint", lambda: (run_dir / "config.json").exists()),
      ("during a checkpoint save", lambda: _saving(run_dir) and len(_steps(run_dir)) >= 2),
      ("between saves, later on", lambda: len(_steps(run_dir)) >= 1
       and _steps(run_dir)[-1] >= 300),
  ]
  for name, cond in moments:
    proc = _start(run_dir)
    reached = _wait_for(cond, proc)
    assert reached, f"run ended before the moment {name!r}: {proc.communicate()[1]}"
    proc.kill()
    proc.wait()
  proc = _start(run_dir)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  _assert_same(run_dir, reference)
