"""How the ``auto`` search scores candidates: label-word matrices, filled through the worker pool.

A candidate's scores are one ``[N, W]`` matrix over the labelled pool (train + dev; NaN where a
row was not scored yet, or is one of its demonstrations) of the log-probability of each of its
columns' label words, plus ``[3, W]`` for the content-free inputs; the domain premise is scored
once for every word of the table (``pmi``). :class:`MatrixStore` holds them (and is what the
checkpoint saves); :func:`score_jobs` runs the jobs on a
:class:`~autoprompt_search.search.workers.WorkerPool` (in-process or Ray) and hands back each
job's ``[n, W]`` rows, or why the design could not be scored.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.data import Example
from ..core.errors import UserError
from .workers import Design, Job, WorkerPool

MAX_ATTEMPTS = 3  # a job lost with its worker this many times: give up
CF_CHUNK = -1  # the chunk number of a candidate's content-free job


@dataclass
class MatrixStore:
    """Every candidate's word log-probs (``m``: [N, W] over the pool, ``cf``: [3, W]) and the
    premise's (``pmi``: per predict-space flag, [T] over the word table)."""

    rows: int
    m: dict[int, torch.Tensor] = field(default_factory=dict)
    cf: dict[int, torch.Tensor] = field(default_factory=dict)
    pmi: dict[int, torch.Tensor] = field(default_factory=dict)

    def matrix(self, cid: int, width: int) -> torch.Tensor:
        if cid not in self.m:
            self.m[cid] = torch.full((self.rows, width), math.nan)
        return self.m[cid]

    def scored(self, cid: int) -> set[int]:
        """Rows of candidate ``cid`` that hold scores."""
        if cid not in self.m:
            return set()
        return set(torch.nonzero(~torch.isnan(self.m[cid][:, 0]))[:, 0].tolist())

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"m{k}": v for k, v in self.m.items()}
        out.update({f"cf{k}": v for k, v in self.cf.items()})
        out.update({f"pmi{k}": v for k, v in self.pmi.items()})
        return out

    @classmethod
    def from_tensors(cls, rows: int, tensors: dict[str, torch.Tensor]) -> MatrixStore:
        store = cls(rows)
        for name, t in tensors.items():
            for prefix, target in (("pmi", store.pmi), ("cf", store.cf), ("m", store.m)):
                if name.startswith(prefix):
                    target[int(name[len(prefix):])] = t.float().clone()
                    break
        return store


@dataclass
class Request:
    """Rows of one design to score: ``cid`` (-1: the premise), the pool rows (or none, for the
    content-free inputs / the premise) and their examples."""

    cid: int
    chunk: int
    design: Design
    rows: tuple[int, ...]
    examples: tuple[Example, ...]


def requests_for(cid: int, design: Design, rows: Sequence[int], pool: Sequence[Example],
                 chunk: int) -> list[Request]:
    """The pool rows of one candidate cut into requests of ``chunk`` rows."""
    rows = list(rows)
    return [Request(cid, j, design, tuple(rows[s:s + chunk]), tuple(pool[r] for r in rows[s:s + chunk]))
            for j, s in enumerate(range(0, len(rows), chunk))]


def score_jobs(pool: WorkerPool, requests: Sequence[Request]
               ) -> tuple[dict[tuple[int, int], torch.Tensor], dict[tuple[int, int], str]]:
    """Run ``requests`` on ``pool``: ({(cid, chunk): [n, W] log-probs}, {(cid, chunk): why the
    design could not score them})."""
    jobs = deque(Job(r.cid, r.chunk, r.design, r.rows, r.examples, kind="words") for r in requests)
    done: dict[tuple[int, int], torch.Tensor] = {}
    failed: dict[tuple[int, int], str] = {}
    while jobs or pool.in_flight:
        while jobs and pool.free_slots > 0:
            pool.submit(jobs.popleft())
        if not pool.in_flight:
            raise RuntimeError("jobs are waiting but the worker pool takes none")
        for out in pool.poll():
            job = out.job
            if out.lost:
                if job.attempts >= MAX_ATTEMPTS:
                    raise UserError(f"a scoring job was lost with its worker {job.attempts} times; "
                                    "check the cluster and continue with --resume")
                jobs.append(job)
            elif out.error is not None:
                failed[(job.trial, job.chunk)] = str(out.error)
            else:
                done[(job.trial, job.chunk)] = torch.tensor(out.scores, dtype=torch.float32)
    return done, failed
