"""The package surface: every public name stays what it is, whatever is imported."""

import importlib
import pkgutil
import types

import flaxae


def test_fit_is_not_shadowed_by_the_train_subpackage():
  # Importing every submodule binds ``flaxae.train`` to the subpackage; the
  # API function must live under another name so that it survives that.
  for info in pkgutil.walk_packages(flaxae.__path__, "flaxae."):
    importlib.import_module(info.name)
  assert isinstance(flaxae.train, types.ModuleType)
  assert callable(flaxae.fit) and flaxae.fit.__module__ == "flaxae.api"
  for name in flaxae.__all__:
    assert getattr(flaxae, name) is getattr(importlib.import_module("flaxae.api"), name,
                                            getattr(flaxae, name)), name
