"""Classification and retrieval metrics (plain numpy, no sklearn dependency)."""

from __future__ import annotations

import numpy as np


def classification_metrics(gold: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class accuracy (recall) over ``len(labels)`` classes."""
    gold = np.asarray(gold)
    pred = np.asarray(pred)
    n = len(gold)
    per_class: dict[str, float | None] = {}
    f1s = []
    for c, name in enumerate(labels):
        tp = float(np.sum((pred == c) & (gold == c)))
        fp = float(np.sum((pred == c) & (gold != c)))
        fn = float(np.sum((pred != c) & (gold == c)))
        support = tp + fn
        per_class[name] = tp / support if support else None
        if support:  # classes absent from the gold labels do not count in macro-F1
            denom = 2 * tp + fp + fn
            f1s.append(2 * tp / denom if denom else 0.0)
    return {
        "accuracy": float(np.mean(gold == pred)) if n else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "per_class_accuracy": per_class,
        "n": int(n),
    }


def retrieval_metrics(gold_rank: np.ndarray) -> dict:
    """Precision@1/@10 and mean reciprocal rank from 0-based ranks of the gold object."""
    ranks = np.asarray(gold_rank, dtype=float)
    return {
        "precision_at_1": float(np.mean(ranks == 0)) if len(ranks) else float("nan"),
        "precision_at_10": float(np.mean(ranks < 10)) if len(ranks) else float("nan"),
        "mrr": float(np.mean(1.0 / (ranks + 1))) if len(ranks) else float("nan"),
        "n": int(len(ranks)),
    }
