"""Test set-up: four forced CPU devices, strict numerics, fast defaults.

The suite runs on CPU by default, with ``FLAXAE_TEST_DEVICES`` (default 4)
forced host devices. ``JAX_PLATFORMS=cuda`` (or ``tpu``) runs it on an
accelerator with the devices it has: float32 products are then computed in
exact float32 (JAX's default lets XLA use TF32 on recent NVIDIA GPUs, which
the tests' float32 tolerances do not allow), and a test marked
``@pytest.mark.devices(n)`` is skipped where fewer than ``n`` devices exist.
"""

import os

import pytest

# Must happen before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") +
    f" --xla_force_host_platform_device_count={os.environ.get('FLAXAE_TEST_DEVICES', '4')}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=wrong-import-position

jax.config.update("jax_numpy_rank_promotion", "raise")
if jax.default_backend() != "cpu":
  jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "devices(n): needs at least n JAX devices (skipped where fewer exist)")


def pytest_runtest_setup(item):
  for mark in item.iter_markers(name="devices"):
    if jax.device_count() < mark.args[0]:
      pytest.skip(f"needs {mark.args[0]} devices, {jax.device_count()} available")
