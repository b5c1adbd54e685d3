"""Word-type embedding dropout (Gal & Ghahramani 2016; AWD-LSTM ``embedded_dropout``):
a dropped word type is zero at *every* occurrence, kept rows are rescaled by 1/keep."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.engine import EmbeddingDropout, embedding_dropout

V, E = 12, 5


def words() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, V, (30, 8))  # (T, B): every type occurs many times


def test_every_occurrence_of_a_dropped_type_is_zero_and_kept_rows_are_rescaled():
    p = 0.5
    weight = torch.randn(V, E, dtype=torch.double) + 3.0  # no accidental zeros
    ids = words()
    out = embedding_dropout(weight, ids, p, training=True)  # (T, B, E)
    dropped = set()
    for word in ids.unique().tolist():
        rows = out[ids == word]  # every occurrence of this word type
        if (rows == 0).all():
            dropped.add(word)
        else:
            torch.testing.assert_close(rows, (weight[word] / (1 - p)).expand_as(rows), rtol=0, atol=1e-12)
    assert 0 < len(dropped) < len(ids.unique())


def test_dropped_rows_get_no_gradient():
    weight = torch.randn(V, E, requires_grad=True)
    ids = words()
    out = embedding_dropout(weight, ids, 0.5, training=True)
    out.sum().backward()
    zero_rows = (out == 0).all(-1)  # (T, B)
    dropped = ids[zero_rows].unique()
    assert dropped.numel() > 0
    assert (weight.grad[dropped] == 0).all()
    kept = ids[~zero_rows].unique()
    assert (weight.grad[kept] != 0).all()


def test_eval_is_plain_lookup_and_test_scaling_multiplies_by_keep():
    weight = torch.randn(V, E)
    ids = words()
    torch.testing.assert_close(embedding_dropout(weight, ids, 0.4, training=False), weight[ids])
    torch.testing.assert_close(embedding_dropout(weight, ids, 0.4, training=False, scaling="test"), weight[ids] * 0.6)
    train = embedding_dropout(weight, ids, 0.4, training=True, scaling="test")
    assert ((train == 0) | (train == weight[ids])).all()  # no rescaling while training


def test_module_checks_its_own_training_flag_and_shares_the_embedding():
    embedding = nn.Embedding(V, E)
    module = EmbeddingDropout(embedding, 0.5)
    assert module.embedding.weight is embedding.weight  # weight tying keeps working
    ids = words()
    torch.manual_seed(1)
    assert (module(ids) == 0).all(-1).any()
    module.eval()
    torch.testing.assert_close(module(ids), embedding(ids))
    assert torch.equal(EmbeddingDropout(embedding, 0.0)(ids), embedding(ids))


@pytest.mark.parametrize("p", [1.0, -0.2, float("nan")])
def test_bad_rate(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        EmbeddingDropout(nn.Embedding(V, E), p)
