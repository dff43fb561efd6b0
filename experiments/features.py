"""Codes as features: linear probes and k-means, against raw pixels and PCA.

A dense autoencoder is trained (without labels); then a logistic regression
(standardised inputs, L2, lbfgs) is fitted on the training set's codes and
tested on the test set's, next to the same classifier on the raw pixels and
on PCA projections of the same dimension as the code; and k-means (k = 10)
on the test set's codes, PCA projections and pixels, scored by NMI and ARI.

  python -m experiments.features                 # Fashion-MNIST 60k / 10k
  python -m experiments.features --data digits   # scikit-learn's 8×8 digits
  python -m experiments.features --quick
"""

from __future__ import annotations

import time

from experiments import common
from flaxae import viz
from flaxae.apps import features
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.data import load_dataset

SETTINGS = {
    "fashion_mnist": dict(data=DataConfig(name="fashion_mnist", dir=str(common.FASHION)),
                          widths=(512, 256, 32), epochs=20, batch=256),
    "digits": dict(data=DataConfig(name="digits"), widths=(64, 16), epochs=100, batch=32),
}


def main(argv: list[str] | None = None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--data", choices=sorted(SETTINGS), default="fashion_mnist")
  p.add_argument("--epochs", type=common.non_negative_int, default=0,
                 help="override the data's default (0: keep it)")
  p.add_argument("--max_iter", type=common.positive_int, default=1000,
                 help="logistic regression iterations")
  args = p.parse_args(argv)
  setting = SETTINGS[args.data]
  out = common.out_dir(f"features-{args.data}", args)
  start = time.perf_counter()
  data = setting["data"]
  if args.quick:
    data = common.quick_data(data, 1000, 300)
  epochs = 1 if args.quick else (args.epochs or setting["epochs"])
  widths = setting["widths"]
  cfg = Config(
      data=data, model=ModelConfig(widths=widths),
      train=TrainConfig(epochs=epochs, batch_size=64 if args.quick else setting["batch"],
                        seed=args.seed),
      checkpoint=CheckpointConfig(every_steps=10**9, keep=1),
      run_dir=str(common.runs_dir(args) / f"features-{args.data}-{'-'.join(map(str, widths))}"
                  f"-e{epochs}{'-quick' if args.quick else ''}-s{args.seed}"))
  ds = load_dataset(cfg.data, args.seed)
  run = common.get_run(cfg)
  probe = features.probe_table(run, ds, max_iter=20 if args.quick else args.max_iter,
                               seed=args.seed)
  clusters = features.clustering_table(run, ds, seed=args.seed)
  results = {"data": args.data, "train": len(ds.train_x), "test": len(ds.test_x),
             "widths": list(widths), "epochs": epochs, "probe": probe, "kmeans": clusters,
             "test_psnr": run.evaluate(ds.test_x)["psnr"],
             "seconds": time.perf_counter() - start,
             "command": common.command("features", argv)}
  common.write_json(out / f"features_{args.data}.json", results)

  codes = features.embed(run, ds.test_x[:3000])
  figs = [out / f"features_{args.data}_latent_pca.png",
          out / f"features_{args.data}_latent_tsne.png",
          out / f"features_{args.data}_loss.png"]
  viz.save_latent_scatter(codes, ds.test_y[:3000], figs[0], method="pca",
                          title=f"{args.data}: {codes.shape[1]}-D test codes, PCA")
  viz.save_latent_scatter(codes[:1500], ds.test_y[:1500], figs[1], method="tsne",
                          title=f"{args.data}: {codes.shape[1]}-D test codes, t-SNE")
  viz.save_loss_curves(run.history, figs[2], title=f"{args.data}: {'-'.join(map(str, widths))}")
  common.publish(figs, args)

  rows = [{"features": k, "dim": probe["dim"] if k != "raw" else probe["raw_dim"],
           "probe_accuracy": probe[k], "kmeans_nmi": clusters[k]["nmi"],
           "kmeans_ari": clusters[k]["ari"]} for k in ("code", "pca", "raw")]
  print(common.table(rows, ["features", "dim", "probe_accuracy", "kmeans_nmi", "kmeans_ari"]))
  return results


if __name__ == "__main__":
  common.cli(main)
