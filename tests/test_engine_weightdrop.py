"""WeightDrop without swapping Parameters (salesforce/awd-lstm-lm issues 2, 79, 86, 114, 119).

The dropped weight is computed each forward and handed to the fused kernel; the raw
``weight_hh_l{k}`` stays the module's only parameter and receives the gradient.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from benchmark.engine import GRU, LSTM

D, H, T, B = 3, 6, 5, 2




@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_raw_weight_gets_the_gradient_masked_elementwise(cls):
    torch.manual_seed(0)
    module = cls(D, H, 2, scheme="weightdrop", dropout=0.5)
    out, _ = module(torch.randn(T, B, D))
    out.sum().backward()
    for layer in range(2):
        raw = getattr(module, f"weight_hh_l{layer}")
        mask = module.last_masks[(layer, "w_hh")]
        assert mask.shape == raw.shape  # one DropConnect mask on the weight, per forward call
        assert raw.grad is not None
        assert (raw.grad[mask == 0] == 0).all()  # dropped connections learn nothing this step
        assert (raw.grad[mask != 0] != 0).float().mean() > 0.9


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_parameters_are_never_swapped(cls):
    torch.manual_seed(0)
    module = cls(D, H, 2, scheme="weightdrop", dropout=0.5)
    before = {name: id(p) for name, p in module.named_parameters()}
    reference = (nn.LSTM if cls is LSTM else nn.GRU)(D, H, 2)
    assert list(before) == [name for name, _ in reference.named_parameters()]
    assert list(module.buffers()) == []
    for _ in range(3):
        module(torch.randn(T, B, D))[0].sum().backward()
    module.eval()
    module(torch.randn(T, B, D))
    assert {name: id(p) for name, p in module.named_parameters()} == before


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_a_new_mask_every_forward_call(cls):
    torch.manual_seed(0)
    module = cls(D, H, scheme="weightdrop", dropout=0.5)
    module(torch.randn(T, B, D))
    first = module.last_masks[(0, "w_hh")]
    module(torch.randn(T, B, D))
    assert not torch.equal(first, module.last_masks[(0, "w_hh")])


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_survives_conversion_copy_and_state_dict_round_trips(cls):
    torch.manual_seed(0)
    module = cls(D, H, 2, batch_first=True, scheme="weightdrop", dropout=0.4)
    x = torch.randn(B, T, D)
    module(x)[0].sum().backward()

    module = module.double()
    module(x.double())[0].sum().backward()
    module = module.to(torch.float32)
    module(x)[0].sum().backward()

    clone = copy.deepcopy(module)
    for seed in (1, 2):
        torch.manual_seed(seed)
        a, _ = module(x)
        torch.manual_seed(seed)
        b, _ = clone(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(p is not q for p, q in zip(module.parameters(), clone.parameters()))

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = cls(D, H, 2, batch_first=True, scheme="weightdrop", dropout=0.4)
    fresh.load_state_dict(torch.load(buffer), strict=True)
    module.eval(), fresh.eval()
    torch.testing.assert_close(module(x)[0], fresh(x)[0], rtol=0, atol=0)

    buffer = io.BytesIO()
    torch.save(module, buffer)  # whole-module pickle, as checkpoints of some trainers do
    buffer.seek(0)
    unpickled = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(unpickled(x)[0], fresh(x)[0], rtol=0, atol=0)

    fresh.train()
    for _ in range(5):
        fresh.zero_grad()
        out, _ = fresh(x)
        out.pow(2).mean().backward()
        assert all(p.grad is not None for p in fresh.parameters())
