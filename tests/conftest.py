"""Test set-up: four forced CPU devices, strict numerics, fast defaults."""

import os

# Must happen before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=wrong-import-position

jax.config.update("jax_numpy_rank_promotion", "raise")
