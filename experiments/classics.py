"""The Keras blog's autoencoders re-done, and their stability over seeds.

The three dense autoencoders of the classic Keras tutorial ("Building
Autoencoders in Keras") and of this project's reference model, trained as the
tutorial does (ReLU hidden layers and code, sigmoid output read as logits by
BCE, Adam 1e-3, batch 256, 50 epochs, no other regulariser):

* ``shallow``: 784-32-784;
* ``deep``: 784-128-64-32-64-128-784;
* ``reference``: 784-256-64-256-784;

on Fashion-MNIST (60,000 / 10,000) and on the MNIST digits of
``../shared/data/mnist_test`` (the 10,000 t10k images, split 8,000 / 2,000 by
``data.split_seed`` 0). For each: test BCE, MSE and PSNR, training time, and a
picture of test images above their reconstructions.

Stability: every setting is also trained with ``train.num_seeds=5`` (five
models, five initialisations and data orders, in one compiled program); the
five models' test figures are reported as mean ± standard deviation. Seed 0
of that program is the single run (the test suite proves each vmapped model
equals its own run to 1e-5).

  python -m experiments.classics           # the full budget (tens of minutes on 2 cores)
  python -m experiments.classics --quick   # smoke test: 1 epoch on a few hundred images
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import common
from flaxae import viz
from flaxae.api import load
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.data import load_dataset

MODELS = {"shallow": (32,), "deep": (128, 64, 32), "reference": (256, 64)}
DATA = {"fashion_mnist": DataConfig(name="fashion_mnist", dir=str(common.FASHION)),
        "mnist": DataConfig(name="mnist", dir=str(common.MNIST), test_fraction=0.2)}
FIGURES = ("bce", "mse", "psnr")
SEEDS = 5


def _config(data: str, model: str, seeds: int, args) -> Config:
  data_cfg = DATA[data]
  epochs = args.epochs
  if args.quick:
    data_cfg = common.quick_data(data_cfg, 512, 256)
    epochs = 1
  return Config(
      data=data_cfg,
      model=ModelConfig(arch="dense", widths=MODELS[model], activation="relu",
                        code_activation="relu", loss="bce"),
      train=TrainConfig(epochs=epochs, batch_size=256, learning_rate=1e-3, optimizer="adam",
                        seed=args.seed, num_seeds=seeds, eval_batch_size=2000),
      checkpoint=CheckpointConfig(every_steps=10**9, keep=1),
      run_dir=str(common.runs_dir(args) / f"classics-{data}-{model}-e{epochs}-x{seeds}"
                  f"{'-quick' if args.quick else ''}-s{args.seed}"))


def _train_seconds(run_dir: Path) -> float:
  """Seconds of all epochs from ``metrics.jsonl`` (the first one compiles)."""
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  return float(sum(json.loads(line).get("seconds", 0.0) for line in lines))


def one_setting(data: str, model: str, args, out: Path) -> tuple[dict[str, Any], Path]:
  """Figures of one (data, model) setting, and its picture."""
  single_cfg = _config(data, model, 1, args)
  ds = load_dataset(single_cfg.data)
  start = time.perf_counter()
  single = common.get_run(single_cfg)
  row: dict[str, Any] = {"data": data, "model": model,
                         "widths": "784-" + "-".join(map(str, MODELS[model]))}
  row.update({k: v for k, v in single.evaluate(ds.test_x).items() if k in FIGURES})
  row["train_s"] = _train_seconds(single.dir)
  pic = out / f"classics_{data}_{model}.png"
  x = ds.test_x[:10]
  viz.save_reconstructions(x, single.reconstruct(x), pic, image_shape=single.feature_shape)

  seeds_cfg = _config(data, model, SEEDS, args)
  common.get_run(seeds_cfg)
  per_seed = [load(seeds_cfg.run_dir, seed_index=i).evaluate(ds.test_x)
              for i in range(SEEDS)]
  for k in FIGURES:
    values = np.array([f[k] for f in per_seed])
    row[f"{k}_mean"], row[f"{k}_std"] = float(values.mean()), float(values.std(ddof=1))
    row[f"{k}_per_seed"] = values.tolist()
  row[f"train_s_x{SEEDS}"] = _train_seconds(Path(seeds_cfg.run_dir))
  row["seconds"] = time.perf_counter() - start
  print(f"{data} {model}: BCE {row['bce']:.4f}, MSE {row['mse']:.4f}; over {SEEDS} seeds "
        f"BCE {row['bce_mean']:.4f} ± {row['bce_std']:.4f}", flush=True)
  return row, pic


def main(argv: list[str] | None = None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--epochs", type=common.positive_int, default=50)
  p.add_argument("--data", type=common.names_in(list(DATA)), default=list(DATA),
                 help="comma-separated: " + ", ".join(DATA))
  p.add_argument("--models", type=common.names_in(list(MODELS)), default=list(MODELS),
                 help="comma-separated: " + ", ".join(MODELS))
  args = p.parse_args(argv)
  out = common.out_dir("classics", args)
  rows, pictures = [], []
  for data in args.data:
    for model in args.models:
      row, pic = one_setting(data, model, args, out)
      rows.append(row)
      pictures.append(pic)
  results = {"rows": rows, "epochs": 1 if args.quick else args.epochs, "seeds": SEEDS,
             "command": common.command("classics", argv)}
  common.write_json(out / "classics.json", results)
  common.publish(pictures, args)
  print(common.table(rows, ["data", "widths", "bce", "mse", "psnr", "train_s",
                            "bce_mean", "bce_std", "mse_mean", "mse_std"]))
  return results


if __name__ == "__main__":
  common.cli(main)
