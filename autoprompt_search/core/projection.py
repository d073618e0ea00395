"""Nearest-token projection of continuous vectors: pure tensor functions.

A soft prompt is a ``[K, d]`` matrix of vectors in the model's input-embedding
space. Projecting it maps each vector to its nearest vocabulary embedding(s) under
one of three distances (lower is nearer):

* ``cosine``    -- ``1 - cos(v, e)``, in ``[0, 2]``;
* ``euclidean`` -- ``||v - e||``;
* ``dot``       -- ``-(v . e)`` (the largest dot product is the nearest).

An optional ``allowed`` boolean mask over the vocabulary restricts the candidates
(special tokens, tokens that do not survive a decode/encode round trip, ...), so the
projected text re-tokenises to the projected ids.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import UserError


class DistanceMetric(str, enum.Enum):
    """The distances a projection can use (the one declaration of their names)."""

    cosine = "cosine"
    euclidean = "euclidean"
    dot = "dot"


METRICS: tuple[str, ...] = tuple(m.value for m in DistanceMetric)


def check_metric(metric: str | DistanceMetric) -> str:
    name = getattr(metric, "value", metric)
    if name not in METRICS:
        raise UserError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")
    return name


def distances(vectors: torch.Tensor, embeddings: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """``[K, V]`` distances from each vector (``[K, d]``) to each embedding (``[V, d]``)."""
    metric = check_metric(metric)
    v = vectors.float()
    e = embeddings.float()
    if v.dim() != 2 or e.dim() != 2 or v.shape[1] != e.shape[1]:
        raise ValueError(f"expected [K, d] vectors and [V, d] embeddings, got {tuple(v.shape)} "
                         f"and {tuple(e.shape)}")
    if metric == "cosine":
        return 1.0 - torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(e, dim=-1).T
    if metric == "euclidean":
        return torch.cdist(v[None], e[None])[0]
    return -(v @ e.T)


@dataclass(frozen=True)
class Projection:
    """The nearest tokens of each projected vector, nearest first."""

    metric: str
    ids: torch.Tensor  # [K] nearest token per vector
    distance: torch.Tensor  # [K] its distance
    neighbour_ids: torch.Tensor  # [K, n] the n nearest tokens (column 0 = ids)
    neighbour_distance: torch.Tensor  # [K, n]

    @property
    def token_ids(self) -> list[int]:
        return [int(i) for i in self.ids]


def project(vectors: torch.Tensor, embeddings: torch.Tensor, metric: str = "cosine", top_n: int = 5,
            allowed: torch.Tensor | None = None) -> Projection:
    """Map each vector to its ``top_n`` nearest vocabulary tokens (only ``allowed`` ones)."""
    if top_n < 1:
        raise UserError(f"top_n must be at least 1, got {top_n}")
    with torch.no_grad():
        dist = distances(vectors.detach(), embeddings.detach().to(vectors.device), metric)
        if allowed is not None:
            allowed = allowed.to(dist.device)
            if allowed.shape != (embeddings.shape[0],):
                raise ValueError(f"allowed mask has shape {tuple(allowed.shape)}, expected "
                                 f"[{embeddings.shape[0]}]")
            if not bool(allowed.any()):
                raise UserError("the token filter allows no vocabulary token to project to")
            dist = dist.masked_fill(~allowed[None, :], torch.inf)
            top_n = min(top_n, int(allowed.sum()))
        top_n = min(top_n, dist.shape[1])
        nd, ni = torch.topk(dist, top_n, dim=1, largest=False, sorted=True)
    return Projection(metric, ni[:, 0].cpu(), nd[:, 0].cpu(), ni.cpu(), nd.cpu())


def nearest_ids(vectors: torch.Tensor, embeddings: torch.Tensor, metric: str = "cosine",
                allowed: torch.Tensor | None = None) -> torch.Tensor:
    """``[K]`` ids of the nearest allowed token of each vector."""
    return project(vectors, embeddings, metric, 1, allowed).ids


def vocabulary_distance_scale(embeddings: torch.Tensor, metric: str = "cosine", sample: int = 2000,
                              seed: int = 0, allowed: torch.Tensor | None = None) -> dict[str, float]:
    """Typical distances between vocabulary embeddings, to put projection distances in scale.

    On a random sample of ``sample`` tokens: ``pair_mean`` = mean distance between two
    different tokens, ``nn_mean`` = mean distance from a token to its nearest other token.
    """
    pool = torch.arange(embeddings.shape[0])
    if allowed is not None:
        pool = pool[allowed.cpu()]
    gen = torch.Generator().manual_seed(seed)
    pick = pool[torch.randperm(len(pool), generator=gen)[: min(sample, len(pool))]]
    sub = embeddings.detach()[pick.to(embeddings.device)]
    dist = distances(sub, sub, metric)
    off = ~torch.eye(len(pick), dtype=torch.bool, device=dist.device)
    pair_mean = float(dist[off].mean())
    nn_mean = float(dist.masked_fill(~off, torch.inf).min(dim=1).values.mean())
    return {"pair_mean": pair_mean, "nn_mean": nn_mean, "sample": int(len(pick))}


def token_f1(predicted: Sequence[int], target: Sequence[int]) -> float:
    """Bag-of-tokens F1 between two id sequences (as in SQuAD's token F1)."""
    if not predicted and not target:
        return 1.0
    common = sum((Counter(predicted) & Counter(target)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(target)
    return 2 * precision * recall / (precision + recall)
