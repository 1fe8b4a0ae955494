"""Time-conditioned vector-field networks."""

from __future__ import annotations

import pytest
import torch

from flowforge.nets import TIME_EMBEDDINGS, SinusoidalEmbedding, TimeMLP


@pytest.mark.parametrize("kind", TIME_EMBEDDINGS)
def test_time_mlp_shapes_time_and_context(kind):
    torch.manual_seed(0)
    net = TimeMLP(3, hidden=(16, 16), time_embedding=kind, context_features=2)
    x, c = torch.randn(5, 3), torch.randn(5, 2)
    v = net(torch.tensor(0.3), x, c)
    assert v.shape == (5, 3)
    # A scalar time is the same as that time for every sample.
    torch.testing.assert_close(net(0.3, x, c), net(torch.full((5,), 0.3), x, c))
    # The output depends on time and on the context.
    assert (net(0.9, x, c) - v).abs().max() > 1e-4
    assert (net(0.3, x, c + 1) - v).abs().max() > 1e-4
    net(torch.rand(5), x, c).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_time_mlp_without_context_and_in_float64():
    net = TimeMLP(2, hidden=(8,), time_embedding="film").double()
    assert (
        net(torch.tensor(0.5, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)).dtype
        == torch.float64
    )


def test_sinusoidal_embedding_values():
    emb = SinusoidalEmbedding(4, max_period=100.0, scale=1.0)
    t = torch.tensor([0.0, 1.0])
    out = emb(t)
    freqs = torch.tensor([1.0, 0.1])
    torch.testing.assert_close(out[1], torch.cat([torch.sin(freqs), torch.cos(freqs)]))
    torch.testing.assert_close(out[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_bad_settings():
    with pytest.raises(ValueError, match="time_embedding must be one of"):
        TimeMLP(2, time_embedding="fourier")
    with pytest.raises(ValueError, match="even"):
        SinusoidalEmbedding(3)
    with pytest.raises(ValueError, match="hidden"):
        TimeMLP(2, hidden=())


@pytest.mark.parametrize("kind", TIME_EMBEDDINGS)
def test_time_mlp_on_an_event_shape_is_the_flat_mlp_reshaped(kind):
    torch.manual_seed(0)
    image = TimeMLP((2, 3, 3), hidden=(16,), time_embedding=kind, context_features=2)
    flat = TimeMLP(18, hidden=(16,), time_embedding=kind, context_features=2)
    flat.load_state_dict(image.state_dict())  # the same layers: only the reshapes differ
    assert image.features == 18 and image.event_shape == (2, 3, 3)
    x, c, t = torch.randn(4, 2, 3, 3), torch.randn(4, 2), torch.rand(4)
    v = image(t, x, c)
    assert v.shape == x.shape
    torch.testing.assert_close(v, flat(t, x.flatten(1), c).view(4, 2, 3, 3))
    # Every output entry depends on every input entry (an MLP over the whole event).
    x0 = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(image(t, x0, c)[:, 0, 0, 0].sum(), x0)
    assert (g.abs() > 0).all()


def test_time_mlp_features_are_checked():
    assert TimeMLP((5,), hidden=(4,)).event_shape == (5,)
    with pytest.raises(ValueError, match=r"features\[1\] must be a positive int, got 0"):
        TimeMLP((2, 0, 3))
    with pytest.raises(TypeError, match=r"features must be a positive int D .* got \(\)"):
        TimeMLP(())
    with pytest.raises(ValueError, match="features must be a positive int, got 0"):
        TimeMLP(0)
