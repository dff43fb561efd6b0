"""One-class-normal anomaly detection on the digits, against scikit-learn baselines.

For each class c in turn: train on the training examples of c only; score
the whole test split, where c is normal and every other class an anomaly;
report ROC-AUC and average precision, with the anomalies as the positive
class (``ap``, base rate about 0.9) and with the normal class as the positive
one (``ap_normal``, base rate about 0.1). In the same run,
on the same split: the autoencoder detector
(:class:`flaxae.apps.anomaly.AutoencoderDetector`, reconstruction MSE), PCA
reconstruction error (as many components as the code), IsolationForest and
One-Class SVM (RBF, ``gamma="scale"``, ``nu=0.1``).

  python -m experiments.anomaly                 # scikit-learn's 8×8 digits
  python -m experiments.anomaly --data mnist    # MNIST t10k, 8,000 / 2,000 split
  python -m experiments.anomaly --quick
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.svm import OneClassSVM
from threadpoolctl import threadpool_limits

from experiments import common
from flaxae import viz
from flaxae.apps.anomaly import AutoencoderDetector
from flaxae.config import DataConfig, ModelConfig, TrainConfig
from flaxae.data import load_dataset

SETTINGS = {
    "digits": dict(data=DataConfig(name="digits"), widths=(32, 8), epochs=100, batch=16),
    "mnist": dict(data=DataConfig(name="mnist", dir=str(common.MNIST)), widths=(256, 32),
                  epochs=50, batch=64),
}
METHODS = ("autoencoder", "pca", "isolation_forest", "ocsvm")


def _flat(x: np.ndarray) -> np.ndarray:
  return x.reshape(len(x), -1).astype(np.float64)


def baseline_scores(normal: np.ndarray, test: np.ndarray, dim: int,
                    seed: int) -> dict[str, np.ndarray]:
  """Anomaly scores (higher: more abnormal) of the scikit-learn baselines."""
  a, t = _flat(normal), _flat(test)
  with threadpool_limits(1):  # OpenMP beside JAX's threads is slow (see flaxae.viz).
    pca = PCA(n_components=min(dim, len(a) - 1), random_state=seed).fit(a)
    recon = pca.inverse_transform(pca.transform(t))
    iso = IsolationForest(random_state=seed).fit(a)
    svm = OneClassSVM(gamma="scale", nu=0.1).fit(a)
    return {"pca": np.mean((t - recon) ** 2, axis=1),
            "isolation_forest": -iso.score_samples(t),
            "ocsvm": -svm.score_samples(t)}


def main(argv: list[str] | None = None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--data", choices=sorted(SETTINGS), default="digits")
  p.add_argument("--epochs", type=common.non_negative_int, default=0,
                 help="override the data's default (0: keep it)")
  args = p.parse_args(argv)
  setting = SETTINGS[args.data]
  out = common.out_dir(f"anomaly-{args.data}", args)
  start = time.perf_counter()
  data = setting["data"]
  if args.quick:
    data = common.quick_data(data, 600, 200)
  ds = load_dataset(data, args.seed)
  classes = [0, 1] if args.quick else list(range(10))
  epochs = 2 if args.quick else (args.epochs or setting["epochs"])
  dim = setting["widths"][-1]

  rows, curves = [], {}
  for c in classes:
    normal = ds.train_x[ds.train_y == c]
    truth = (ds.test_y != c).astype(int)
    det = AutoencoderDetector(
        model=ModelConfig(widths=setting["widths"]),
        train=TrainConfig(epochs=epochs, batch_size=setting["batch"], seed=args.seed),
        random_state=args.seed)
    t0 = time.perf_counter()
    scores = {"autoencoder": det.fit(normal).anomaly_score(ds.test_x)}
    ae_seconds = time.perf_counter() - t0
    scores.update(baseline_scores(normal, ds.test_x, dim, args.seed))
    row = {"class": c, "normal_train": len(normal), "test_normal": int((truth == 0).sum()),
           "test_anomalies": int(truth.sum()), "ae_fit_seconds": ae_seconds}
    for m in METHODS:
      row[f"{m}_auc"] = float(roc_auc_score(truth, scores[m]))
      row[f"{m}_ap"] = float(average_precision_score(truth, scores[m]))
      # The normal class as the positive one (its base rate is ~0.1, not ~0.9).
      row[f"{m}_ap_normal"] = float(average_precision_score(1 - truth, -scores[m]))
    rows.append(row)
    curves[c] = (truth, scores)
    print(f"class {c}: " + ", ".join(f"{m} AUC {row[f'{m}_auc']:.3f}" for m in METHODS),
          flush=True)
  mean = {"class": "mean"}
  for m in METHODS:
    for k in ("auc", "ap", "ap_normal"):
      mean[f"{m}_{k}"] = float(np.mean([r[f"{m}_{k}"] for r in rows]))
  results = {
      "data": args.data, "train": len(ds.train_x), "test": len(ds.test_x),
      "code_dim": dim, "widths": list(setting["widths"]), "epochs": epochs,
      "rows": rows, "mean": mean, "seconds": time.perf_counter() - start,
      "command": common.command("anomaly", argv),
  }
  common.write_json(out / f"anomaly_{args.data}.json", results)

  worst = min(rows, key=lambda r: r["autoencoder_auc"])["class"]
  best = max(rows, key=lambda r: r["autoencoder_auc"])["class"]
  figs = []
  for label, c in (("hardest", worst), ("easiest", best)):
    truth, scores = curves[c]
    figs.append(out / f"anomaly_{args.data}_roc_{label}_class.png")
    viz.save_roc({m: (truth, scores[m]) for m in METHODS}, figs[-1],
                 title=f"{args.data}: normal class {c} ({label} for the autoencoder)")
  common.publish(figs, args)

  cols = ["class"] + [f"{m}_{k}" for m in METHODS for k in ("auc", "ap", "ap_normal")]
  print(common.table(rows + [mean], cols))
  return results


if __name__ == "__main__":
  common.cli(main)
