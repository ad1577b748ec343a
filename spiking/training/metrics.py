"""Metrics: running sums for an epoch, confusion matrices, JSON-lines logs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch


class Meter:
    """Running sums over batches: loss, correct predictions, spikes, samples, seconds."""

    FIELDS = ("loss_sum", "correct", "spikes", "samples")

    def __init__(self):
        self.loss_sum = self.correct = self.spikes = self.samples = 0.0
        self.has_spikes = False

    def update(self, loss: float, logits: torch.Tensor, labels: torch.Tensor,
               spikes: float | None) -> None:
        n = labels.shape[0]
        self.loss_sum += float(loss) * n
        self.correct += float((logits.argmax(1) == labels).sum())
        self.samples += n
        if spikes is not None:
            self.spikes += float(spikes)
            self.has_spikes = True

    def sums(self) -> list[float]:
        return [self.loss_sum, self.correct, self.spikes, self.samples]

    @staticmethod
    def summarize(sums, has_spikes: bool = True) -> dict:
        loss_sum, correct, spikes, samples = (float(v) for v in sums)
        samples = max(samples, 1.0)
        return {"loss": loss_sum / samples, "accuracy": correct / samples,
                "spikes_per_sample": spikes / samples if has_spikes else None}


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``cm[true, predicted]`` counts, int64 ``[C, C]``."""
    idx = labels.to(torch.long) * n_classes + pred.to(torch.long)
    return torch.bincount(idx.cpu(), minlength=n_classes * n_classes).reshape(n_classes,
                                                                               n_classes)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


def append_jsonl(path, record: dict) -> None:
    """Append one JSON object as a line (flushed and fsync'ed so a killed run keeps it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False)
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


def rewrite_jsonl(path, records: list[dict]) -> None:
    """Replace the log with `records` (used on resume to drop epochs after the checkpoint)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps({k: _clean(v) for k, v in r.items()}) + "\n" for r in records)
    os.replace(tmp, path)
