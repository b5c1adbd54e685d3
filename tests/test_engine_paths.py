"""Which path runs: the speed contract of the engine.

``none``, ``naive`` and ``weightdrop`` must run on the native kernel (dropout stays
outside the recurrence, DropConnect hands a dropped weight in); in-loop schemes use the
hand-written segment only while they sample (and in eval for zoneout / ``test`` scaling).
"""

from __future__ import annotations

import pytest
import torch

from benchmark.engine import GRU, LSTM, SCHEMES, gru, lstm, native

D, H, T, B = 3, 4, 5, 2
IN_LOOP = {"variational", "moon", "semeniuta", "zoneout", "state_dropout"}




@pytest.fixture
def calls(monkeypatch):
    counts = {"native": 0, "segment": 0}

    def counting(fn, key):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name in ("lstm_layer", "gru_layer"):
        monkeypatch.setattr(native, name, counting(getattr(native, name), "native"))
    monkeypatch.setattr(lstm, "lstm_segment", counting(lstm.lstm_segment, "segment"))
    monkeypatch.setattr(gru, "gru_segment", counting(gru.gru_segment, "segment"))
    return counts


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_path_choice(cls, scheme, training, calls):
    module = cls(D, H, 2, scheme=scheme, dropout=0.3).train(training)
    module(torch.randn(T, B, D))
    # In eval, zoneout's expectation and test scaling (moon's default: x keep every step) act in the loop.
    evaluates_in_loop = scheme == "zoneout" or SCHEMES[scheme].options.get("scaling") == "test"
    loop = scheme in IN_LOOP and (training or evaluates_in_loop)
    assert calls == ({"native": 0, "segment": 2} if loop else {"native": 2, "segment": 0})
    assert module.path(training) == ("segment" if loop else "native")


def test_untied_input_masks_alone_still_need_the_loop(calls):
    LSTM(D, H, scheme="variational", dropout={"x": 0.3})(torch.randn(T, B, D))
    assert calls["segment"] == 1
    LSTM(D, H, scheme="variational", dropout={"x": 0.3}, gate_masks="tied")(torch.randn(T, B, D))
    assert calls["native"] == 1


def test_test_scaling_in_eval_needs_the_loop_only_inside_the_recurrence(calls):
    LSTM(D, H, scheme="semeniuta", dropout=0.3, scaling="test").eval()(torch.randn(T, B, D))
    assert calls == {"native": 0, "segment": 1}
    LSTM(D, H, scheme="weightdrop", dropout=0.3, scaling="test").eval()(torch.randn(T, B, D))
    assert calls == {"native": 1, "segment": 1}


def test_pack_like_relays_replacements_at_the_flat_offsets():
    """The CUDA-only packing, checked on CPU: same offsets, padding kept, gradients flow."""
    storage = torch.zeros(40)
    params = [storage[0:12].view(3, 4), storage[16:28].view(3, 4), storage[28:31], storage[32:35]]
    assert native.is_flat(params) and not native.is_flat([torch.zeros(2), torch.zeros(2)])
    replacements = [torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True),
                    torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)]
    packed = native.pack_like(params, replacements)
    assert native.is_flat(packed)
    for orig, new, rep in zip(params, packed, replacements):
        assert new.storage_offset() == orig.storage_offset() and new.shape == orig.shape
        assert torch.equal(new, rep)
    assert packed[0].untyped_storage().nbytes() == storage.untyped_storage().nbytes()
    sum(p.sum() for p in packed).backward()
    assert all(torch.equal(r.grad, torch.ones_like(r)) for r in replacements)
