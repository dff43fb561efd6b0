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


_SIGNAL_AS_JAX_LOADS = """
import builtins, os, signal, sys
real = builtins.__import__
def hook(name, *args, **kwargs):
  if name == "jax" and not hook.sent:  # The window that lost a signal in a gc callback.
    hook.sent = True
    os.kill(os.getpid(), signal.SIGINT)
  return real(name, *args, **kwargs)
hook.sent = False
builtins.__import__ = hook
from flaxae import cli
sys.exit(cli.main(["train", f"--run_dir={sys.argv[1]}", "--model.widths=16,4",
                   "--train.epochs=1", "--no-progress"]))
"""


def test_flaxae_train_holds_a_signal_from_before_jax_loads(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", _SIGNAL_AS_JAX_LOADS, str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 130, out.stderr
  assert "interrupted before the first step" in out.stderr and "Traceback" not in out.stderr


def test_a_second_signal_on_the_command_line_exits_at_once():
  # Raised, it could be swallowed (a gc callback) or leave a job's process
  # waiting in a collective: the command line exits instead.
  script = ("import os, signal, time\n"
            "from flaxae.signals import StopRequest\n"
            "with StopRequest(exit_on_second=True) as stop:\n"
            "  os.kill(os.getpid(), signal.SIGTERM)\n"
            "  assert stop.signum == signal.SIGTERM\n"
            "  os.kill(os.getpid(), signal.SIGTERM)\n"
            "  time.sleep(30)\n")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 143
  assert out.stderr.startswith("flaxae: interrupted (signal 15 again: stopped at once")


def test_a_signal_during_the_last_call_leaves_a_finished_run(tmp_path):
  # It printed "interrupted at step N; run the same command to resume" (exit
  # 130) about a run whose last step, evaluation and outputs were done.
  from flaxae.config import CheckpointConfig, Config, ModelConfig, TrainConfig  # pylint: disable=import-outside-toplevel
  from flaxae.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from flaxae.signals import StopRequest  # pylint: disable=import-outside-toplevel

  class SignalAfterTheFirstCall(StopRequest):
    calls = 0

    def agreed(self):
      self.calls += 1
      return None if self.calls == 1 else signal.SIGTERM

  cfg = Config(model=ModelConfig(widths=(16, 4)), train=TrainConfig(epochs=1, batch_size=64),
               checkpoint=CheckpointConfig(), run_dir=str(tmp_path / "run"))
  run = train_and_evaluate(cfg, progress=False, stop=SignalAfterTheFirstCall())
  assert run.interrupted_by is None
  assert (tmp_path / "run" / "eval.json").exists()
