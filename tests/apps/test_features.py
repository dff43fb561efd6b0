"""Codes as features: embeddings, linear probes and clustering."""

from __future__ import annotations

import numpy as np
import pytest

from flaxae import cli
from flaxae.apps import features
from flaxae.data import Dataset
from flaxae.errors import DataError, OutputError


def test_embed_is_the_flat_code(digits_run, digits):
  z = features.embed(digits_run, digits.test_x)
  assert z.shape == (len(digits.test_x), 8) and z.dtype == np.float32
  np.testing.assert_array_equal(z, digits_run.encode(digits.test_x))
  # No examples: no rows, of the code's width.
  assert features.embed(digits_run, digits.test_x[:0]).shape == (0, 8)


def test_probe_beats_chance_and_reports_every_row(digits_run, digits):
  table = features.probe_table(digits_run, digits, max_iter=200)
  assert table["dim"] == 8 and table["raw_dim"] == 64
  for key in ("code", "pca", "raw"):
    assert 0.3 < table[key] <= 1.0, (key, table[key])  # Chance is 0.1.


def test_linear_probe_on_separable_data_is_perfect():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(-3, 1, (50, 2)), rng.normal(3, 1, (50, 2))])
  y = np.repeat([0, 1], 50)
  assert features.linear_probe(x, y, x, y) == 1.0


def test_clustering_scores(digits_run, digits):
  table = features.clustering_table(digits_run, digits)
  for key in ("code", "pca", "raw"):
    assert 0.1 < table[key]["nmi"] <= 1.0 and -0.5 < table[key]["ari"] <= 1.0
  y = np.repeat(np.arange(3), 20)
  perfect = np.eye(3)[y] * 10
  assert features.cluster_scores(perfect, y) == {"nmi": 1.0, "ari": 1.0}


def test_pca_baseline_of_a_code_wider_than_the_data_takes_the_whole_basis():
  # A 100-value code of 64-pixel digits asked scikit-learn for 100 components.
  rng = np.random.default_rng(0)
  train, test = rng.random((80, 8, 8, 1)), rng.random((20, 8, 8, 1))
  tr, te = features.pca(train, test, 100)
  assert tr.shape == (80, 64) and te.shape == (20, 64)
  assert features.pca(train[:30], test, 100)[0].shape == (30, 30)


def test_probes_need_labels(digits_run, digits):
  unlabelled = Dataset("x", digits.train_x, digits.test_x)
  with pytest.raises(DataError, match="has no labels"):
    features.probe_table(digits_run, unlabelled)


def test_cli_embed(digits_run, digits, tmp_path, capsys):
  np.save(tmp_path / "x.npy", digits.test_x[:12, ..., 0])
  out = tmp_path / "z.npy"
  assert cli.main(["embed", str(digits_run.dir), str(tmp_path / "x.npy"), "-o", str(out)]) == 0
  assert "float32 array of shape (12, 8)" in capsys.readouterr().out
  np.testing.assert_array_equal(np.load(out), digits_run.encode(digits.test_x[:12]))
  with pytest.raises(OutputError, match="exists; pass --overwrite"):
    cli.main(["embed", str(digits_run.dir), str(tmp_path / "x.npy"), "-o", str(out),
              "--debug"])
  assert cli.main(["embed", str(digits_run.dir), str(tmp_path / "x.npy"), "-o", str(out),
                   "--overwrite"]) == 0
