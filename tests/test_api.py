"""The package surface: every public name stays what it is, whatever is imported."""

import importlib
import pkgutil
import subprocess
import sys
import types

import flaxae


def test_fit_is_not_shadowed_by_the_train_subpackage():
  # Importing every submodule binds ``flaxae.train`` to the subpackage; the
  # API function must live under another name so that it survives that.
  for info in pkgutil.walk_packages(flaxae.__path__, "flaxae."):
    importlib.import_module(info.name)
  assert isinstance(flaxae.train, types.ModuleType)
  assert callable(flaxae.fit) and flaxae.fit.__module__ == "flaxae.api"
  for name in flaxae.__all__:  # Each public name is its home module's object.
    home = importlib.import_module(flaxae._PUBLIC[name])  # pylint: disable=protected-access
    assert getattr(flaxae, name) is getattr(home, name), name


def test_public_names_and_light_modules_load_lazily():
  # The benchmark peers (PyTorch, Keras) import flaxae.timing: it must not load JAX.
  code = ("import sys, flaxae.timing; assert 'jax' not in sys.modules, 'jax loaded'; "
          "from flaxae import Config, fit; assert 'jax' in sys.modules; print(fit.__name__)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=120)
  assert out.stdout.strip() == "fit"
  assert set(flaxae.__all__) <= set(dir(flaxae))
