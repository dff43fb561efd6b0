"""The loop end to end: learns, writes its run directory, resumes bit-identically."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

import flaxae
from flaxae.config import (CheckpointConfig, Config, DataConfig, ModelConfig,
                           TrainConfig)
from flaxae.errors import CheckpointError, ConfigError, TrainingError
from flaxae.train.loop import Schedule, train_and_evaluate


def _cfg(run_dir, **train):
  return Config(
      data=DataConfig(name="digits"),
      model=ModelConfig(widths=(32, 8)),
      train=TrainConfig(**{"epochs": 3, "batch_size": 64, **train}),
      checkpoint=CheckpointConfig(every_steps=10, keep=2),
      run_dir=str(run_dir))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  return train_and_evaluate(_cfg(tmp_path_factory.mktemp("full")), progress=False)


def test_run_directory_holds_everything(full_run):
  d = full_run.dir
  for name in ("config.json", "run.json", "metrics.jsonl", "reconstructions.png",
               "eval.json"):
    assert (d / name).is_file(), name
  assert any((d / "tensorboard").iterdir())
  steps = sorted(int(p.name) for p in (d / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 66 and len(steps) == 2  # keep=2; 22 steps/epoch × 3 epochs.
  records = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2, 3]
  assert {"train/loss", "test/loss", "test/mse", "samples_per_s"} <= set(records[0])


def test_training_beats_the_untrained_model(full_run, tmp_path):
  untrained = train_and_evaluate(
      _cfg(tmp_path, epochs=1), progress=False, stop_after_steps=0)
  from flaxae.data import load_dataset
  test_x = load_dataset(full_run.config.data, 0).test_x
  trained_mse = full_run.evaluate(test_x)["mse"]
  untrained_mse = untrained.evaluate(test_x)["mse"]
  assert trained_mse < 0.7 * untrained_mse
  records = full_run.history
  assert records[-1]["test/loss"] < records[0]["test/loss"]


def test_interrupted_then_resumed_is_bit_identical(full_run, tmp_path):
  cfg = _cfg(tmp_path)
  part = train_and_evaluate(cfg, progress=False, stop_after_steps=30)
  assert int(part.state.step) == 30
  assert not (tmp_path / "reconstructions.png").exists()
  # Records after the checkpoint (none here) would be dropped; epoch 1 is kept.
  resumed = train_and_evaluate(cfg, progress=False)
  assert int(resumed.state.step) == 66
  jax.tree.map(np.testing.assert_array_equal, resumed.state.params, full_run.state.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.state.opt_state,
               full_run.state.opt_state)
  assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
  # Epoch 2 was cut at step 30 of 22..44: its train figures still cover all its
  # steps (the checkpoint carries the epoch's sums so far), as do the others'.
  for mine, theirs in zip(resumed.history, full_run.history):
    figures = {k for k in theirs if k.startswith(("train/", "test/"))}
    assert {k: mine[k] for k in figures} == {k: theirs[k] for k in figures}


def test_load_gives_the_trained_model(full_run):
  run = flaxae.load(full_run.dir)
  jax.tree.map(np.testing.assert_array_equal, run.variables["params"],
               full_run.state.params)
  x = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
  codes = run.encode(x)
  assert codes.shape == (5, 8)
  images = run.decode(codes)
  assert images.shape == (5, 8, 8, 1) and images.min() >= 0 and images.max() <= 1
  np.testing.assert_allclose(run.reconstruct(x), images, atol=1e-6)
  # Flattened and uint8 inputs are accepted too.
  np.testing.assert_allclose(run.encode((x * 255).astype(np.uint8).reshape(5, 64)),
                             run.encode(np.floor(x * 255) / 255), atol=1e-5)
  # One example (image or code) is a batch of one; integer codes are not rescaled.
  np.testing.assert_allclose(run.encode(x[0]), codes[:1], atol=1e-5)
  np.testing.assert_allclose(run.decode(codes[0]), images[:1], atol=1e-5)
  np.testing.assert_allclose(run.decode(np.ones((1, 8), np.uint8)),
                             run.decode(np.ones((1, 8), np.float32)))
  assert run.evaluate_each(x) == run.evaluate(x)  # One model: its own figures.
  # No examples in, none out, in the shape of many.
  assert run.encode(np.zeros((0, 64), np.float32)).shape == (0, 8)
  assert run.decode(np.zeros((0, 8), np.float32)).shape == (0, 8, 8, 1)
  assert run.reconstruct(np.zeros((0, 8, 8, 1), np.uint8)).shape == (0, 8, 8, 1)


def test_same_seed_same_bits(full_run, tmp_path):
  again = train_and_evaluate(_cfg(tmp_path), progress=False)
  jax.tree.map(np.testing.assert_array_equal, again.state.params, full_run.state.params)


def test_other_config_is_refused(full_run):
  cfg = _cfg(full_run.dir)
  cfg = Config(data=cfg.data, model=ModelConfig(widths=(32, 4)), train=cfg.train,
               checkpoint=cfg.checkpoint, run_dir=cfg.run_dir)
  with pytest.raises(CheckpointError, match=r"model.widths: \[32, 8\] → \[32, 4\]"):
    train_and_evaluate(cfg, progress=False)


def test_epochs_may_grow_only_under_a_constant_rate(full_run, tmp_path):
  shutil.copytree(full_run.dir, tmp_path / "run")
  saved = {f: (tmp_path / "run" / f).read_bytes() for f in ("config.json", "run.json")}
  with pytest.raises(CheckpointError, match=r"has trained to step 66 \(3 epochs of 22 steps\); "
                                            r"train.epochs=2 ends at step 44"):
    train_and_evaluate(_cfg(tmp_path / "run", epochs=2), progress=False)
  with pytest.raises(CheckpointError, match="train.schedule=cosine spreads its learning "
                                            "rates over train.epochs"):
    train_and_evaluate(_cfg(tmp_path / "run", epochs=4, schedule="cosine"), progress=False)
  for f, content in saved.items():  # A refused resume writes nothing.
    assert (tmp_path / "run" / f).read_bytes() == content
  assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1  # No new event file.
  (tmp_path / "run" / "config.json").unlink()  # Checkpoints with nothing to check against.
  with pytest.raises(CheckpointError, match="has checkpoints but no config.json"):
    train_and_evaluate(_cfg(tmp_path / "run", epochs=4), progress=False)


def test_other_data_is_refused_before_anything_is_written(tmp_path):
  data = tmp_path / "data.npy"
  rng = np.random.default_rng(0)
  np.save(data, rng.integers(0, 256, (200, 6, 6), np.uint8))
  cfg = Config(data=DataConfig(name="npy", path=str(data)), model=ModelConfig(widths=(8, 2)),
               train=TrainConfig(epochs=1, batch_size=32), run_dir=str(tmp_path / "run"))
  train_and_evaluate(cfg, progress=False)
  saved = {f: (tmp_path / "run" / f).read_bytes() for f in ("config.json", "run.json")}
  for other, change in [(rng.integers(0, 256, (200, 6, 6), np.uint8), "data_digest"),
                        (rng.integers(0, 256, (100, 6, 6), np.uint8), "num_train"),
                        (rng.integers(0, 256, (200, 6, 3), np.uint8), "feature_shape")]:
    np.save(data, other)
    with pytest.raises(CheckpointError, match=rf"was trained on other data \(.*{change}"):
      train_and_evaluate(cfg, progress=False)
    for f, content in saved.items():
      assert (tmp_path / "run" / f).read_bytes() == content


def test_a_directory_without_a_checkpoint_is_reused(tmp_path):
  # A first attempt that stopped before its first checkpoint has nothing to
  # resume: another config may take the directory (it was refused as "made with
  # another config", which left the user stuck with a directory of nothing).
  train_and_evaluate(_cfg(tmp_path, epochs=1), progress=False, stop_after_steps=0)
  assert (tmp_path / "config.json").exists() and not any((tmp_path / "checkpoints").iterdir())
  cfg = dataclasses.replace(_cfg(tmp_path, epochs=1), model=ModelConfig(widths=(16, 4)))
  run = train_and_evaluate(cfg, progress=False)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["widths"] == [16, 4]
  assert int(run.state.step) == 22


def test_data_paths_are_stored_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (100, 4, 4), np.uint8))
  cfg = Config(data=DataConfig(name="npy", path="x.npy"), model=ModelConfig(widths=(4, 2)),
               train=TrainConfig(epochs=1, batch_size=32), run_dir="run")
  train_and_evaluate(cfg, progress=False)
  saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]["path"]
  assert saved == str(tmp_path / "x.npy")
  train_and_evaluate(cfg, progress=False)  # The same relative config still resumes.
  (tmp_path / "elsewhere").mkdir()
  monkeypatch.chdir(tmp_path / "elsewhere")  # Evaluated from another directory.
  from flaxae import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(["eval", str(tmp_path / "run")]) == 0


def test_loading_leaves_a_save_in_progress_alone(full_run, tmp_path):
  # A reader (load, eval, the apps) must not clean up the temporary folder of a
  # checkpoint that a training process is writing (it killed that process).
  shutil.copytree(full_run.dir, tmp_path / "run")
  pending = tmp_path / "run" / "checkpoints" / "70.orbax-checkpoint-tmp"
  pending.mkdir()
  run = flaxae.load(tmp_path / "run")
  assert pending.is_dir() and int(run.state.step) == 66


def test_too_many_bad_steps_stop_the_run(tmp_path):
  cfg = _cfg(tmp_path, learning_rate=1e30, max_bad_steps=3, epochs=2)
  with pytest.raises(TrainingError, match=r"the last \d+ steps had a non-finite loss .* "
                                          r"no checkpoint was written"):
    train_and_evaluate(cfg, progress=False)


def test_schedule_stops():
  s = Schedule(steps_per_epoch=22, total_steps=66, steps_per_call=0, checkpoint_every=10)
  stops, step = [], 0
  while step < 66:
    step = s.next_stop(step)
    stops.append(step)
  assert stops == [10, 20, 22, 30, 40, 44, 50, 60, 66]
  assert [t for t in stops if s.is_checkpoint(t)] == [10, 20, 30, 40, 50, 60, 66]
  s = Schedule(steps_per_epoch=10, total_steps=20, steps_per_call=4, checkpoint_every=0)
  stops, step = [], 0
  while step < 20:
    step = s.next_stop(step)
    stops.append(step)
  assert stops == [4, 8, 10, 14, 18, 20]


def test_profile_saves_a_trace_of_one_epoch(tmp_path):
  cfg = dataclasses.replace(_cfg(tmp_path / "run", epochs=2), profile=True)
  train_and_evaluate(cfg, progress=False)
  traces = list((tmp_path / "run" / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 1000


def test_compilation_cache_keeps_the_programs_and_a_second_run_loads_them(tmp_path):
  cache = tmp_path / "cache"
  cfg = dataclasses.replace(_cfg(tmp_path / "a", epochs=1), compilation_cache=str(cache))
  events = []

  def listen(name, **_):
    events.append(name)

  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.monitoring.register_event_listener(listen)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # Keep tiny ones too.
  try:
    train_and_evaluate(cfg, progress=False)
    assert any("chunk" in p.name for p in cache.iterdir())
    assert events.count("/jax/compilation_cache/cache_misses") > 0  # Compiled and kept.
    events.clear()
    train_and_evaluate(dataclasses.replace(cfg, run_dir=str(tmp_path / "b")), progress=False)
    # The same run again compiles nothing: every program comes from the cache.
    assert events.count("/jax/compilation_cache/cache_hits") > 0
    assert events.count("/jax/compilation_cache/cache_misses") == 0
    # The setting was the run's alone: the process's own is back, and a run
    # without one (another model) keeps nothing in the folder.
    assert jax.config.jax_compilation_cache_dir == before[0]
    kept = sorted(p.name for p in cache.iterdir())
    other = _cfg(tmp_path / "c", epochs=1)
    train_and_evaluate(dataclasses.replace(
        other, model=dataclasses.replace(other.model, widths=(8, 2))), progress=False)
    assert sorted(p.name for p in cache.iterdir()) == kept
  finally:
    jax.monitoring.unregister_event_listener(listen)
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_compilation_cache_must_be_a_folder(tmp_path):
  (tmp_path / "f").write_text("x")
  cfg = dataclasses.replace(_cfg(tmp_path / "a"), compilation_cache=str(tmp_path / "f"))
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    train_and_evaluate(cfg, progress=False)
  assert not (tmp_path / "a").exists()


def test_a_run_directory_trains_one_run_at_a_time(tmp_path):
  # A sweep that lists one config twice: the second training is refused before
  # it writes anything, instead of mixing its checkpoints and metrics in.
  from flaxae.train.rundir import exclusive  # pylint: disable=import-outside-toplevel
  cfg = _cfg(tmp_path / "run", epochs=1)
  with exclusive(tmp_path / "run"):
    with pytest.raises(CheckpointError, match="is in use by another training"):
      train_and_evaluate(cfg, progress=False)
  assert not (tmp_path / "run").exists()
  train_and_evaluate(cfg, progress=False)  # Free again.
  with exclusive(tmp_path / "run"):  # And freed by the training that held it.
    pass


def test_throughput_leaves_compilation_out(full_run):
  # The first epoch's samples/s counted the training chunk's compilation
  # (965 against ≈30,000 samples/s after it).
  # (Later epochs compile too here: their checkpoints every 10 steps cut
  # chunks of other lengths.)
  first = full_run.history[0]
  assert first["compile_s"] > 0.0
  steps = first["step"]  # Of every epoch (none was interrupted).
  for r in full_run.history:
    assert 0.0 <= r["compile_s"] < r["seconds"]
    assert r["samples_per_s"] == pytest.approx(
        steps * 64 / (r["seconds"] - r["compile_s"]), rel=1e-9)
