"""Image residual flows: the convolution operator's spectral norm, Lipschitz conv branches,
residual blocks on (C, H, W) events, and the resflow recipe on images (float64, small images)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flowforge as ff
import flowforge.transforms as T
from flowforge.distributions.batch import Batch
from flowforge.nets import (
    LipschitzConvNet,
    SpectralConv2d,
    converge_spectral_norms,
    frozen_power_iteration,
    lipschitz_estimate,
)
from helpers import autograd_ladj, perturb

SHAPES = [(1, 4, 4), (2, 4, 4)]


def dense_operator(weight: torch.Tensor, spatial: tuple[int, int]) -> torch.Tensor:
    """The matrix of x -> conv2d(x, weight) ('same' padding) on images of size ``spatial``."""
    c_in, k = weight.shape[1], weight.shape[-1]
    n = c_in * spatial[0] * spatial[1]
    eye = torch.eye(n, dtype=weight.dtype).view(n, c_in, *spatial)
    return F.conv2d(eye, weight, padding=k // 2).flatten(1).T  # (out entries, in entries)


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "spatial"),
    [(1, 3, 3, (4, 4)), (2, 5, 3, (4, 5)), (3, 2, 1, (4, 4)), (2, 2, 5, (6, 3))],
)
def test_power_iteration_converges_to_the_operator_norm(c_in, c_out, k, spatial):
    torch.manual_seed(0)
    conv = SpectralConv2d(c_in, c_out, k, spatial, coeff=100.0).double()
    sigma = conv.converge(max_iterations=20000, rtol=1e-13)
    exact = torch.linalg.matrix_norm(dense_operator(conv.weight.detach(), spatial), ord=2)
    torch.testing.assert_close(sigma, exact, rtol=1e-7, atol=0)
    if k > 1:  # the reshaped kernel's norm is a different number: the operator's is used
        kernel = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(float(kernel - exact)) > 1e-3


def test_normalised_operator_norm_is_coeff_and_small_kernels_are_left_alone():
    torch.manual_seed(1)
    conv = SpectralConv2d(2, 4, 3, (4, 4), coeff=0.5).double().eval()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    conv(x)  # evaluation converges the vectors for these weights
    norm = torch.linalg.matrix_norm(dense_operator(conv.normalized_weight().detach(), (4, 4)), 2)
    torch.testing.assert_close(norm, torch.tensor(0.5, dtype=torch.float64), rtol=1e-6, atol=0)
    loose = SpectralConv2d(2, 4, 3, (4, 4), coeff=100.0).double().eval()
    loose(x)
    torch.testing.assert_close(loose.normalized_weight(), loose.weight)


def test_training_calls_iterate_frozen_calls_do_not_and_eval_reconverges():
    torch.manual_seed(2)
    conv = SpectralConv2d(1, 3, 3, (4, 4)).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    conv.u.copy_(F.normalize(torch.randn(3 * 16, dtype=torch.float64), dim=0).view(3, 4, 4))
    before = conv.u.clone()
    with frozen_power_iteration(conv):
        conv.train()(x)
    torch.testing.assert_close(conv.u, before)
    assert not conv.power_iteration_frozen  # restored
    conv(x)
    assert not torch.equal(conv.u, before)
    # A new weight: evaluation converges its vectors before use.
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.1)
    conv.eval()(x)
    exact = torch.linalg.matrix_norm(dense_operator(conv.weight.detach(), (4, 4)), ord=2)
    torch.testing.assert_close(conv.compute_sigma(), exact, rtol=1e-5, atol=0)
    conv.u.copy_(before)
    converge_spectral_norms(conv, max_iterations=5000, rtol=1e-12)
    torch.testing.assert_close(conv.compute_sigma(), exact, rtol=1e-7, atol=0)


def test_spectral_conv_refuses_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SpectralConv2d(1, 2, 2, (4, 4))
    with pytest.raises(ValueError, match=r"spatial must be the image size \(H, W\)"):
        SpectralConv2d(1, 2, 3, (4,))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 4, 4\)"):
        SpectralConv2d(1, 2, 3, (4, 4))(torch.randn(2, 1, 5, 5))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_conv_branch_is_coeff_lipschitz(shape):
    torch.manual_seed(3)
    g = LipschitzConvNet(shape, hidden=(8, 8), coeff=0.9, context_features=2)
    # Large weights, so that every layer is rescaled and the bound is tight-ish.
    g = perturb(g.double(), std=0.5).eval()
    assert [conv.kernel_size for conv in g.convs] == [3, 1, 3]
    c = torch.randn(6, 2, dtype=torch.float64)
    x = 2 * torch.randn(6, *shape, dtype=torch.float64)

    def flat(v: torch.Tensor) -> torch.Tensor:
        return g(v.view(-1, *shape), c).flatten(1)

    estimate = lipschitz_estimate(flat, x.flatten(1), steps=30)
    assert 0.1 < float(estimate) <= 0.9 + 1e-9
    # The linear part alone (identity activations) has operator norm exactly <= coeff.
    ops = [dense_operator(conv.normalized_weight().detach(), shape[1:]) for conv in g.convs]
    product = ops[2] @ ops[1] @ ops[0]
    assert float(torch.linalg.matrix_norm(product, ord=2)) <= 0.9 + 1e-9


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_image_residual_block_inverts_and_its_logdet_is_exact(shape):
    torch.manual_seed(4)
    block = T.ResidualBlock(shape, hidden=(8, 8), coeff=0.9, context_features=2, tol=1e-13)
    block = perturb(block.double(), std=0.3).eval()
    assert block.ladj_is_exact  # 16 or 32 entries: exact at evaluation
    x = torch.randn(5, *shape, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    y, ladj = block.forward_and_ladj(x, c)
    assert y.shape == x.shape
    expected = autograd_ladj(lambda v: block(v.view(-1, *shape), c).flatten(1), x.flatten(1))
    torch.testing.assert_close(ladj, expected, atol=1e-9, rtol=1e-9)
    x_back, inverse_ladj = block.inverse_and_ladj(y, c)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(inverse_ladj, -ladj, atol=1e-9, rtol=1e-9)
    with pytest.raises(ValueError, match=r"x must have shape \(B, "):
        block(torch.randn(5, shape[0] * 16, dtype=torch.float64), c)


def test_image_block_training_estimate_is_unbiased_on_average():
    # The roulette estimate (training mode) on the flattened event averages to the exact value.
    torch.manual_seed(5)
    block = perturb(T.ResidualBlock((1, 4, 4), hidden=(8, 8), coeff=0.7).double(), std=0.3)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64).expand(4000, 1, 4, 4)
    with frozen_power_iteration(block), torch.no_grad():
        exact = block.eval().forward_and_ladj(x[:1])[1]
        estimate = block.train().forward_and_ladj(x)[1]
    torch.testing.assert_close(estimate.mean(), exact[0], atol=0.05, rtol=0)


def build(shape: tuple, seed: int = 0, **extra) -> ff.Model:
    torch.manual_seed(seed)
    model = ff.models.create(
        "resflow", shape=shape, layers=2, hidden=(8, 8), tol=1e-12, **extra
    ).double()
    e = extra.get("context_dim", 0)
    context = torch.randn(64, e, dtype=torch.float64) if e else None
    with torch.no_grad():  # ActNorm's initialisation
        model.log_prob(1.5 * torch.randn(64, *shape, dtype=torch.float64) + 0.5, context)
    return perturb(model, std=0.05, seed=seed).eval()


@pytest.mark.parametrize("squeeze", [False, True], ids=["plain", "squeeze"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_resflow_on_images_contract(shape, squeeze):
    model = build(shape, squeeze=squeeze, context_dim=3)
    assert model.log_prob_is_exact
    x = 2 * torch.randn(6, *shape, dtype=torch.float64)
    c = torch.randn(6, 3, dtype=torch.float64)
    z = model.encode(x, c)
    assert z.shape == x.shape
    torch.testing.assert_close(model.decode(z, c), x, atol=1e-8, rtol=0)
    ladj = autograd_ladj(lambda v: model.encode(v.view(-1, *shape), c).flatten(1), x.flatten(1))
    torch.testing.assert_close(
        model.log_prob(x, c), model.base.log_prob(z) + ladj, atol=1e-8, rtol=1e-8
    )
    samples = model.sample(5, context=c[:5])
    assert samples.shape == (5, *shape) and torch.isfinite(samples).all()


def test_resflow_images_with_labels_train_and_are_listed():
    assert "resflow" in ff.models.image_models()
    torch.manual_seed(6)
    model = ff.models.create("resflow", shape=(1, 4, 4), layers=2, hidden=(8, 8), num_classes=3)
    labels = torch.tensor([0, 1, 2, 0])
    # Images with a label-dependent mean: a few Adam steps lower the (training) loss.
    x = torch.randn(4, 1, 4, 4) * 0.3 + labels.view(-1, 1, 1, 1).float()
    batch = Batch(x, context=labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with torch.no_grad():
        first = float(-model.eval().log_prob(x, context=labels).mean())
    model.train()
    for _ in range(30):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = float(-model.eval().log_prob(x, context=labels).mean())
    assert last < first - 1.0
    # The label changes the density: it enters every branch as a per-channel bias.
    other = model.log_prob(x, context=(labels + 1) % 3)
    assert not torch.allclose(other, model.log_prob(x, context=labels))


def test_resflow_image_defaults_and_errors():
    model = ff.models.create("resflow", shape=(1, 8, 8))
    blocks = [m for m in model.modules() if isinstance(m, T.ResidualBlock)]
    assert len(blocks) == 8
    assert all(isinstance(b.branch, LipschitzConvNet) for b in blocks)
    assert [conv.out_channels for conv in blocks[0].branch.convs] == [32, 32, 1]
    # squeeze=None squeezes even-sized images halfway: the second half sees (4, 4, 4).
    assert [b.event_shape for b in blocks] == [(1, 8, 8)] * 4 + [(4, 4, 4)] * 4
    assert model.sample(2).shape == (2, 1, 8, 8)
    assert model.eval().log_prob_is_exact  # 64 entries: exact at evaluation
    assert not ff.models.create("resflow", shape=(2, 8, 8)).eval().log_prob_is_exact
    odd = ff.models.create("resflow", shape=(1, 5, 5), layers=2, squeeze=None)
    assert [m.event_shape for m in odd.modules() if isinstance(m, T.ResidualBlock)] == [
        (1, 5, 5)
    ] * 2
    plain = ff.models.create("resflow", shape=(1, 8, 8), layers=2, squeeze=False)
    assert [m.event_shape for m in plain.modules() if isinstance(m, T.ResidualBlock)] == [
        (1, 8, 8)
    ] * 2
    with pytest.raises(ValueError, match=r"squeeze=True .* even H and W, got shape \(1, 5, 5\)"):
        ff.models.create("resflow", shape=(1, 5, 5), squeeze=True)
    with pytest.raises(ValueError, match=r"even H and W, got shape \(4,\)"):
        ff.models.create("resflow", dim=4, squeeze=True)
    # Vectors are unchanged: MLP branches of (128, 128), no squeeze.
    vector = ff.models.create("resflow", dim=4)
    assert all(
        isinstance(m.branch, ff.nets.LipschitzMLP)
        for m in vector.modules()
        if isinstance(m, T.ResidualBlock)
    )
