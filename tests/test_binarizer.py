"""The shared weight binarizer: values, sign(0), scaling modes and the STE gradient."""

import pytest
import torch

from sj_bwsnn.layers import WeightBinarizer, binarize_weight, binary_sign


def _weights():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64) * 0.8
    w[0, 0, 0, 0] = 0.0
    w[1, 1, 1, 1] = 1.5  # outside the STE window
    return w


def test_channel_scaling_gives_exactly_two_values_per_output_channel():
    w = _weights()
    wb = binarize_weight(w, "channel")
    for c in range(w.shape[0]):
        alpha = w[c].abs().mean()
        values = set(wb[c].flatten().tolist())
        assert values <= {alpha.item(), -alpha.item()} and len(values) == 2
        assert torch.equal(wb[c], alpha * torch.where(w[c] >= 0, 1.0, -1.0).double())


def test_sign_of_zero_is_plus_one():
    assert binary_sign(torch.tensor([0.0, -0.0, 1e-30, -1e-30])).tolist() == [1.0, 1.0, 1.0, -1.0]
    w = _weights()
    assert binarize_weight(w, "none")[0, 0, 0, 0].item() == 1.0


def test_tensor_and_none_scaling():
    w = _weights()
    wt = binarize_weight(w, "tensor")
    assert set(wt.abs().flatten().tolist()) == {w.abs().mean().item()}
    wn = binarize_weight(w, "none")
    assert set(wn.flatten().tolist()) == {1.0, -1.0}


def test_linear_weight_per_row():
    w = torch.randn(5, 7)
    wb = binarize_weight(w)
    assert torch.allclose(wb.abs(), w.abs().mean(1, keepdim=True).expand_as(w))


def test_ste_gradient_detached_alpha_is_clipped_identity():
    w = _weights().requires_grad_()
    g = torch.randn_like(w)
    binarize_weight(w, "channel", detach_alpha=True).backward(g)
    expected = g * (w.detach().abs() <= 1)
    assert torch.equal(w.grad, expected)
    assert w.grad[1, 1, 1, 1] == 0  # |w| > 1 blocks the gradient


@pytest.mark.parametrize("scaling", ["channel", "tensor"])
def test_ste_gradient_with_alpha_path_matches_autograd_reference(scaling):
    w = _weights()
    w[0, 0, 0, 0] = 0.3  # d|w|/dw at exactly 0: torch says 0, our sign(0)=+1 says 1; both valid
    w.requires_grad_()
    g = torch.randn_like(w)
    binarize_weight(w, scaling, detach_alpha=False).backward(g)

    w2 = w.detach().clone().requires_grad_()
    dims = tuple(range(1, 4)) if scaling == "channel" else tuple(range(4))
    alpha = w2.abs().mean(dim=dims, keepdim=True)
    clipped = w2.clamp(-1, 1)
    # alpha * sign(w) in value; gradient: clipped identity (unscaled) + the alpha path.
    ref = alpha * binary_sign(w2).detach() + (clipped - clipped.detach())
    ref.backward(g)
    assert torch.allclose(w.grad, w2.grad, atol=1e-12)


def test_unknown_scaling_is_rejected():
    with pytest.raises(ValueError, match="scaling"):
        WeightBinarizer("row")
    with pytest.raises(ValueError, match="scaling"):
        binarize_weight(torch.ones(2, 2), "row")
