"""Variants through the loop, the checkpoints, the Python API and the CLI."""

import json

import jax
import numpy as np
import pytest

import flaxae
from flaxae.api import Run
from flaxae.cli import main
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.errors import ConfigError
from flaxae.models import build_model
from flaxae.train.loop import train_and_evaluate

from tests.objectives.helpers import digits

# The EMA codebook lives in the train state's model_state: it must survive
# checkpoints exactly, as the parameters do.
VQ = ModelConfig(kind="vq", widths=(32, 8), codebook_size=16, codebook_dim=2)


def _cfg(run_dir, model=VQ):
  # 22 steps per epoch in calls of 11: one compiled length, stops mid-epoch.
  return Config(data=DataConfig(name="digits"), model=model,
                train=TrainConfig(epochs=1, batch_size=64, steps_per_call=11),
                checkpoint=CheckpointConfig(keep=2), run_dir=str(run_dir))


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
  return train_and_evaluate(_cfg(tmp_path_factory.mktemp("vq")), progress=False)


def test_vq_resumes_bit_identically(vq_run, tmp_path):
  part = train_and_evaluate(_cfg(tmp_path), progress=False, stop_after_steps=11)
  assert int(part.state.step) == 11
  resumed = train_and_evaluate(_cfg(tmp_path), progress=False)
  for name in ("params", "model_state", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, getattr(resumed.state, name),
                 getattr(vq_run.state, name))
  assert "test/perplexity" in vq_run.history[-1] and "train/restarts" in vq_run.history[-1]


def test_vq_run_through_the_api(vq_run):
  run = flaxae.load(vq_run.dir)
  jax.tree.map(np.testing.assert_array_equal, run.variables["vq"],
               vq_run.state.model_state["vq"])
  x = digits()[1][:5]
  codes = run.encode(x)  # The quantised code.
  assert codes.shape == (5, 8)
  np.testing.assert_allclose(run.decode(codes), run.reconstruct(x), atol=1e-6)
  with pytest.raises(ConfigError, match="needs a model.kind=vae"):
    run.sample(2)


def test_cli_eval_reports_the_kind_and_the_noise(vq_run, tmp_path, capsys):
  out = tmp_path / "e.json"
  assert main(["eval", str(vq_run.dir), "--noise=gaussian:0.5", f"--json_out={out}"]) == 0
  figures = json.loads(out.read_text())
  assert {"loss", "mse", "psnr", "perplexity", "codes_used", "noisy_psnr",
          "denoised_psnr"} <= set(figures)
  assert 1.0 <= figures["perplexity"] <= 16.0
  assert "perplexity" in capsys.readouterr().out
  assert main(["eval", str(vq_run.dir), "--noise=blur:3"]) == 2
  assert "unknown noise 'blur:3'" in capsys.readouterr().err


def test_vae_run_samples_from_the_prior(tmp_path):
  cfg = Config(model=ModelConfig(kind="vae", widths=(32, 4)))
  model = build_model(cfg.model, (8, 8, 1))
  variables = model.init(jax.random.key(0), digits()[1][:1])
  run = Run(tmp_path, cfg, model, variables, history=[])
  images = run.sample(6, seed=1)
  assert images.shape == (6, 8, 8, 1) and 0.0 <= images.min() and images.max() <= 1.0
  np.testing.assert_array_equal(images, run.sample(6, seed=1))
