"""Nearest-token projection on hand-made embeddings whose answers can be checked by eye."""

from __future__ import annotations

import pytest
import torch

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.projection import (
    distances,
    nearest_ids,
    project,
    token_f1,
    vocabulary_distance_scale,
)

# five 2-d "token embeddings"
E = torch.tensor([
    [1.0, 0.0],   # 0: east
    [0.0, 1.0],   # 1: north
    [-1.0, 0.0],  # 2: west
    [3.0, 0.1],   # 3: far east (long)
    [0.7, 0.7],   # 4: north-east
])


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_a_vector_equal_to_a_token_embedding_projects_to_that_token(metric):
    # for dot product the longest vector in a direction wins, so check the tokens where
    # the vector's own token is also its best dot product
    ids = [3, 1, 2] if metric == "dot" else [0, 1, 2, 3, 4]
    proj = project(E[ids], E, metric, top_n=2)
    assert proj.ids.tolist() == ids
    if metric != "dot":
        assert torch.allclose(proj.distance, torch.zeros(len(ids)), atol=1e-6)


def test_neighbour_order_by_euclidean_distance():
    v = torch.tensor([[0.9, 0.2]])
    proj = project(v, E, "euclidean", top_n=5)
    # distances: east 0.22, north-east 0.54, north 1.17, west 1.92, far east 2.10
    assert proj.neighbour_ids[0].tolist() == [0, 4, 1, 2, 3]
    assert proj.neighbour_distance[0].tolist() == sorted(proj.neighbour_distance[0].tolist())
    assert proj.distance[0].item() == pytest.approx((0.1 ** 2 + 0.2 ** 2) ** 0.5, abs=1e-5)


def test_cosine_ignores_length_while_euclidean_and_dot_do_not():
    v = torch.tensor([[2.9, 0.0]])
    assert project(v, E, "euclidean").ids.item() == 3  # (3, 0.1) is closest in space
    assert project(v, E, "dot").ids.item() == 3  # largest dot product
    cos = project(v, E, "cosine", top_n=2)
    assert cos.ids.item() == 0  # exactly the direction of east
    assert cos.neighbour_ids[0, 1].item() == 3
    assert cos.distance.item() == pytest.approx(0.0, abs=1e-6)


def test_dot_distance_is_the_negated_dot_product():
    v = torch.tensor([[1.0, 2.0]])
    assert distances(v, E, "dot")[0].tolist() == pytest.approx([-1.0, -2.0, 1.0, -3.2, -2.1])


def test_allowed_mask_is_respected():
    allowed = torch.tensor([False, True, True, True, True])
    proj = project(E[[0]], E, "cosine", top_n=10, allowed=allowed)
    assert proj.ids.item() == 3  # east itself is banned; far east points the same way
    assert 0 not in proj.neighbour_ids[0].tolist()
    assert proj.neighbour_ids.shape == (1, 4)  # never more neighbours than allowed tokens
    assert nearest_ids(E[[0]], E, "euclidean", allowed).item() == 4


def test_bad_arguments_are_clear_errors():
    with pytest.raises(UserError, match="unknown distance"):
        project(E[[0]], E, "manhattan")
    with pytest.raises(UserError, match="allows no"):
        project(E[[0]], E, allowed=torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[K, d\]"):
        distances(torch.zeros(2, 3), E)


def test_vocabulary_distance_scale():
    scale = vocabulary_distance_scale(E[:3], "euclidean", sample=10)
    # pairs: east-north sqrt2, east-west 2, north-west sqrt2
    assert scale["pair_mean"] == pytest.approx((2 * 2 ** 0.5 + 2) / 3, abs=1e-5)
    assert scale["nn_mean"] == pytest.approx(2 ** 0.5, abs=1e-5)
    assert scale["sample"] == 3


def test_token_f1():
    assert token_f1([1, 2, 3], [1, 2, 3]) == 1.0
    assert token_f1([1, 2], [3, 4]) == 0.0
    assert token_f1([1, 1, 2], [1, 2, 2]) == pytest.approx(2 / 3)
    assert token_f1([], []) == 1.0
