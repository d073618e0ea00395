"""CUDA against CPU: evaluate and every strategy briefly, on tiny models (skipped without CUDA).

Tolerances: float32 class log-probabilities agree within 1e-3 (different kernels, same
maths); accuracies agree exactly on evaluation and within one example (1/12) for a
search's best score (a near-tie between candidates may break differently on a GPU).
``bench/gpu_check.sh`` runs these and the same checks on SmolLM2 with real data.
"""

from __future__ import annotations

import copy

import pytest
import torch

from autoprompt_search.api import run_search
from autoprompt_search.core.tokens import gcg_candidates
from autoprompt_search.models import wrap_model
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.testing import tiny_causal_lm, tiny_masked_lm

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TEMPLATE = "{sentence} [T] [T] it was [P] ."
BUDGETS = {
    "gradient": {"iterations": 3, "k": 4, "batch_size": 6, "init": "random"},
    "soft": {"steps": 4, "batch_size": 6, "eval_every": 2, "init": "random", "lr": 0.5},
    "pez": {"steps": 4, "batch_size": 6, "eval_every": 2, "init": "random", "lr": 0.5},
}


def _pair(make):
    model, tok = make()
    cpu = wrap_model(model, tok, name="tiny")
    gpu = wrap_model(copy.deepcopy(model).to("cuda"), tok, name="tiny")
    return cpu, gpu


@pytest.mark.parametrize("make", [tiny_causal_lm, tiny_masked_lm])
def test_evaluate_on_cuda_matches_cpu(toy_task, make):
    cpu, gpu = _pair(make)
    examples = toy_task.examples("test")
    template = toy_task.prompts[0].template
    a = PromptScorer(cpu, toy_task, template).class_logprobs(examples)
    b = PromptScorer(gpu, toy_task, template).class_logprobs(examples)
    torch.testing.assert_close(b.cpu(), a.cpu(), atol=1e-3, rtol=1e-3)
    assert torch.equal(a.argmax(-1).cpu(), b.argmax(-1).cpu())


def test_gcg_candidates_accept_device_tensors():
    current = torch.tensor([5, 6, 7], device="cuda")
    cands = torch.arange(30, device="cuda").reshape(3, 10)
    rows = gcg_candidates(current, cands, 12, torch.Generator().manual_seed(0))
    same = gcg_candidates(current.cpu(), cands.cpu(), 12, torch.Generator().manual_seed(0))
    assert torch.equal(rows, same)


@pytest.mark.parametrize("strategy", sorted(BUDGETS))
def test_strategies_on_cuda_match_cpu(toy_task, tmp_path, strategy):
    cpu, gpu = _pair(tiny_causal_lm)
    scores = {}
    for name, backend in (("cpu", cpu), ("cuda", gpu)):
        result = run_search(strategy, task=toy_task, model="tiny", template=TEMPLATE,
                            out=tmp_path / name, seed=0, options=BUDGETS[strategy],
                            backend=backend, progress=False)
        scores[name] = result.scores
    key = next(k for k in ("dev_accuracy", "accuracy", "score") if k in scores["cpu"])
    assert abs(scores["cuda"][key] - scores["cpu"][key]) <= 1 / 12 + 1e-9, scores


def test_single_position_candidates_accept_device_tensors():
    from autoprompt_search.core.tokens import single_position_candidates

    current = torch.tensor([5, 6, 7], device="cuda")
    cands = torch.arange(30, device="cuda").reshape(3, 10)
    rows = single_position_candidates(current, cands, 1)
    assert rows.device.type == "cpu" and rows[:, 1].tolist() == list(range(10, 20))
