"""Per-epoch metrics to JSONL and TensorBoard event files (no TensorFlow)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flaxae import io
from flaxae.errors import CheckpointError


class MetricsLogger:
  """Adds one JSON object per epoch to ``metrics.jsonl`` and TensorBoard.

  TensorBoard event files are append-only logs by design (readers skip a torn
  last record); ``metrics.jsonl`` is rewritten atomically at each epoch.

  On resume, :meth:`truncate` drops records written after the restored step,
  so the history matches the parameters.
  """

  def __init__(self, run_dir: str | os.PathLike, enabled: bool = True):
    self.path = Path(run_dir) / "metrics.jsonl"
    self.enabled = enabled
    self._tb_dir = Path(run_dir) / "tensorboard"
    self._tb = None  # Opened at the first record: a refused run writes no event file.

  def history(self) -> list[dict[str, Any]]:
    """The records written so far; a CheckpointError naming the line of a
    damaged file (the library writes it whole, so something else changed it)."""
    if not self.path.exists():
      return []
    records = []
    for number, line in enumerate(self.path.read_text().splitlines(), 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{self.path}, line {number}, is not a JSON record ({e}); mend or delete "
            "the line (or the file: it holds only the training history)") from e
      if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        raise CheckpointError(
            f"{self.path}, line {number}, is not a metrics record (it has no step)")
      records.append({k: float("nan") if v is None else v for k, v in record.items()})
    return records  # (NaN is written as null.)

  def truncate(self, step: int) -> list[dict[str, Any]]:
    """Keeps the records up to ``step``; returns them."""
    kept = [r for r in self.history() if r["step"] <= step]
    if self.enabled and self.path.exists():
      io.write_text(self.path, "".join(io.to_json(r) + "\n" for r in kept))
    return kept

  def write(self, record: dict[str, Any]) -> None:
    """Adds ``record``; the file is replaced atomically, never left half-written."""
    if not self.enabled:
      return
    old = self.path.read_text() if self.path.exists() else ""
    io.write_text(self.path, old + io.to_json(record) + "\n")
    if self._tb is None:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(str(self._tb_dir))
    for k, v in record.items():
      if k != "step" and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, record["step"])
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
