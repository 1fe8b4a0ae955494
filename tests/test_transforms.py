"""Registry-driven contract tests: every transform, at vector and image event shapes, float64,
parameters off their identity init."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import flowforge.transforms as T
from flowforge.nets import ConvConditioner, MLPConditioner, ResNetConditioner
from helpers import autograd_ladj, perturb, state_round_trip

C = 3  # context features of the conditional constructors
H = (16, 16)
VECTOR = (5,)
IMAGE = (2, 4, 4)


@dataclass(frozen=True)
class Entry:
    """One constructor of the table: the class it covers, ``make(shape, context_features)``,
    whether it takes a context, the event ranks it is built at (vector-only transforms say
    so, with the reason), and whether its forward direction takes inputs in ``(0, 1)`` only
    (``unit``: the logit)."""

    cls: type[T.Transform]
    make: Callable[[tuple[int, ...], int], T.Transform]
    context: bool = False
    ranks: tuple[int, ...] = (1, 3)
    why: str = ""
    unit: bool = False


def _compose(shape: tuple[int, ...], c: int) -> T.Transform:
    last = (
        T.MaskedAffineAutoregressive(shape, hidden=H, context_features=c)
        if len(shape) == 1
        else T.AffineCoupling(shape, flip=True, hidden=H, context_features=c, conditioner="conv")
    )
    return T.Compose(
        [
            T.ActNorm(shape),
            T.SplineCoupling(shape, bins=4, hidden=H, context_features=c),
            T.LULinear(shape),
            last,
        ]
    )


def _factor_out(shape: tuple[int, ...], c: int) -> T.Transform:
    inner = T.AffineCoupling(T.kept_shape(shape), hidden=H, context_features=c)
    return T.FactorOut(shape, inner, prior=True, hidden=H, context_features=c)


def _multiscale(shape: tuple[int, ...], c: int) -> T.Transform:
    """Two scales: (2, 4, 4) -> (8, 2, 2), half leaves, (4, 2, 2) -> (16, 1, 1)."""

    def steps(s: tuple[int, ...]) -> T.Transform:
        coupling = T.AffineCoupling(
            s, mask=T.channel_mask(s), hidden=H, context_features=c, conditioner="conv"
        )
        return T.Compose([T.ActNorm(s), T.LULinear(s, seed=1), coupling])

    sq = T.squeezed_shape(shape)
    last_shape = T.kept_shape(sq)
    last = T.MultiScale(last_shape, steps(T.squeezed_shape(last_shape)))
    return T.MultiScale(shape, steps(sq), last, prior=True, hidden=H, context_features=c)


IMAGE_ONLY = "space-to-depth needs an image's height and width"
MADE_ONLY = "MADE's autoregressive order runs over flat vectors"
TRANSFORMS: dict[str, Entry] = {
    "elementwise_affine": Entry(T.ElementwiseAffine, lambda s, c: T.ElementwiseAffine(s)),
    "actnorm": Entry(T.ActNorm, lambda s, c: T.ActNorm(s)),
    "permutation": Entry(
        T.Permutation,
        lambda s, c: T.Permutation(torch.arange(s[0]).roll(1), event_shape=s),
    ),
    "reverse": Entry(T.Reverse, lambda s, c: T.Reverse(s)),
    "random_permutation": Entry(T.RandomPermutation, lambda s, c: T.RandomPermutation(s, seed=3)),
    "lu_linear": Entry(T.LULinear, lambda s, c: T.LULinear(s, seed=1)),
    "coupling_channel_mask": Entry(
        T.Coupling,
        lambda s, c: T.Coupling(
            s, T.AffineTransformer(), mask=T.channel_mask(s), hidden=H, context_features=c
        ),
        context=True,
    ),
    "additive_coupling": Entry(
        T.AdditiveCoupling,
        lambda s, c: T.AdditiveCoupling(s, hidden=H, context_features=c),
        context=True,
    ),
    "affine_coupling": Entry(
        T.AffineCoupling,
        lambda s, c: T.AffineCoupling(s, hidden=H, context_features=c),
        context=True,
    ),
    "affine_coupling_flip": Entry(
        T.AffineCoupling,
        lambda s, c: T.AffineCoupling(s, flip=True, hidden=H, context_features=c),
        context=True,
    ),
    "affine_coupling_conv": Entry(
        T.AffineCoupling,
        lambda s, c: T.AffineCoupling(s, hidden=H, context_features=c, conditioner="conv"),
        context=True,
        ranks=(3,),
        why="the convolutional conditioner takes images",
    ),
    "affine_coupling_resnet": Entry(
        T.AffineCoupling,
        lambda s, c: T.AffineCoupling(
            s, mask=T.channel_mask(s), hidden=(8, 6), context_features=c, conditioner="resnet"
        ),
        context=True,
        ranks=(3,),
        why="the residual conditioner takes images",
    ),
    "spline_coupling": Entry(
        T.SplineCoupling,
        lambda s, c: T.SplineCoupling(s, bins=6, bound=3.0, hidden=H, context_features=c),
        context=True,
    ),
    "spline_coupling_conv_channels": Entry(
        T.SplineCoupling,
        lambda s, c: T.SplineCoupling(
            s,
            bins=6,
            bound=3.0,
            mask=T.channel_mask(s, flip=True),
            hidden=H,
            context_features=c,
            conditioner="conv",
        ),
        context=True,
        ranks=(3,),
        why="the convolutional conditioner takes images",
    ),
    "masked_autoregressive": Entry(
        T.MaskedAutoregressive,
        lambda s, c: T.MaskedAutoregressive(
            s, T.AdditiveTransformer(), hidden=H, context_features=c
        ),
        context=True,
        ranks=(1,),
        why=MADE_ONLY,
    ),
    "maf_affine": Entry(
        T.MaskedAffineAutoregressive,
        lambda s, c: T.MaskedAffineAutoregressive(s, hidden=H, context_features=c),
        context=True,
        ranks=(1,),
        why=MADE_ONLY,
    ),
    "maf_spline": Entry(
        T.MaskedSplineAutoregressive,
        lambda s, c: T.MaskedSplineAutoregressive(
            s, bins=6, bound=3.0, hidden=H, context_features=c
        ),
        context=True,
        ranks=(1,),
        why=MADE_ONLY,
    ),
    "iaf_affine": Entry(
        T.Inverse,
        lambda s, c: T.Inverse(T.MaskedAffineAutoregressive(s, hidden=H, context_features=c)),
        context=True,
        ranks=(1,),
        why=MADE_ONLY,
    ),
    "inverse_coupling": Entry(
        T.Inverse,
        lambda s, c: T.Inverse(T.SplineCoupling(s, bins=4, hidden=H, context_features=c)),
        context=True,
    ),
    "residual_block": Entry(
        T.ResidualBlock,
        # On images the branch is a LipschitzConvNet (spectral norms of the conv operators).
        lambda s, c: T.ResidualBlock(
            s, hidden=H, coeff=0.5, context_features=c, tol=1e-13, max_iter=2000
        ),
        context=True,
    ),
    "compose": Entry(T.Compose, _compose, context=True),
    "squeeze": Entry(T.Squeeze, lambda s, c: T.Squeeze(s), ranks=(3,), why=IMAGE_ONLY),
    "logit": Entry(T.Logit, lambda s, c: T.Logit(s, alpha=0.05), unit=True),
    "factor_out": Entry(T.FactorOut, _factor_out, context=True),
    "factor_out_plain": Entry(
        T.FactorOut, lambda s, c: T.FactorOut(s, inner=T.ActNorm(T.kept_shape(s)))
    ),
    "multiscale": Entry(T.MultiScale, _multiscale, context=True, ranks=(3,), why=IMAGE_ONLY),
}
SHAPES = {1: VECTOR, 3: IMAGE}
CASES = [
    pytest.param(name, SHAPES[rank], id=f"{name}-{'x'.join(map(str, SHAPES[rank]))}")
    for name, entry in TRANSFORMS.items()
    for rank in entry.ranks
]
CONTEXT_CASES = [case for case in CASES if TRANSFORMS[case.values[0]].context]


def test_the_table_covers_every_exported_transform():
    exported = {
        obj
        for name in T.__all__
        if inspect.isclass(obj := getattr(T, name))
        and issubclass(obj, T.Transform)
        and obj is not T.Transform
    }
    missing = exported - {entry.cls for entry in TRANSFORMS.values()}
    assert not missing, f"add contract-test entries for {sorted(c.__name__ for c in missing)}"
    for name, entry in TRANSFORMS.items():
        # A transform that is not built at both shapes says why.
        assert set(entry.ranks) == {1, 3} or entry.why, name


def build(
    name: str, shape: tuple[int, ...], conditional: bool = False
) -> tuple[T.Transform, torch.Tensor | None]:
    entry = TRANSFORMS[name]
    c = C if conditional and entry.context else 0
    t = entry.make(shape, c).double()
    context = torch.randn(16, c, dtype=torch.float64) if c else None
    # Run once in training mode so data-dependent initialisation (ActNorm) happens first.
    first = torch.rand(64, *shape, dtype=torch.float64) if entry.unit else None
    t.forward_and_ladj(
        2 * torch.randn(64, *shape, dtype=torch.float64) + 1 if first is None else first,
        None if c == 0 else torch.randn(64, c, dtype=torch.float64),
    )
    perturb(t, std=0.1)
    return t.eval(), context


def inputs(shape: tuple[int, ...], unit: bool = False) -> torch.Tensor:
    if unit:  # the logit's domain, away from its ends
        return 0.01 + 0.98 * torch.rand(16, *shape, dtype=torch.float64)
    # Wide enough that spline inputs land both inside and outside the spline's interval.
    return 2.5 * torch.randn(16, *shape, dtype=torch.float64)


def out_shape(t: T.Transform, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The event shape ``t`` returns: its input's, unless it changes it (a squeeze)."""
    return getattr(t, "out_shape", shape)


def flat_ladj(f, x: torch.Tensor) -> torch.Tensor:
    """``log |det df/dx|`` by autograd with the event flattened: ``(B, *event) -> (B,)``."""
    shape = x.shape[1:]
    return autograd_ladj(lambda v: f(v.view(-1, *shape)).flatten(1), x.flatten(1))


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "context"])
@pytest.mark.parametrize(("name", "shape"), CASES)
def test_invertible(name, shape, conditional):
    t, c = build(name, shape, conditional)
    x = inputs(shape, TRANSFORMS[name].unit)
    y, _ = t.forward_and_ladj(x, c)
    assert y.shape == (x.shape[0], *out_shape(t, shape))
    torch.testing.assert_close(t.inverse_and_ladj(y, c)[0], x, atol=1e-9, rtol=1e-9)
    y2 = inputs(out_shape(t, shape))
    x2, _ = t.inverse_and_ladj(y2, c)
    torch.testing.assert_close(t.forward_and_ladj(x2, c)[0], y2, atol=1e-9, rtol=1e-9)
    # The conveniences agree with the log-det methods.
    torch.testing.assert_close(t(x, c), y, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "context"])
@pytest.mark.parametrize(("name", "shape"), CASES)
def test_ladj_matches_autograd(name, shape, conditional):
    t, c = build(name, shape, conditional)
    x = inputs(shape, TRANSFORMS[name].unit)
    y, ladj = t.forward_and_ladj(x, c)
    assert ladj.shape == (x.shape[0],)
    torch.testing.assert_close(ladj, flat_ladj(lambda v: t.forward_and_ladj(v, c)[0], x))
    _, inv_ladj = t.inverse_and_ladj(y, c)
    torch.testing.assert_close(inv_ladj, -ladj)
    torch.testing.assert_close(inv_ladj, flat_ladj(lambda v: t.inverse_and_ladj(v, c)[0], y))


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_gradients_reach_every_parameter(name, shape):
    t, c = build(name, shape, conditional=True)
    x = inputs(shape, TRANSFORMS[name].unit).requires_grad_()
    y, ladj = t.forward_and_ladj(x, c)
    x2, ladj2 = t.inverse_and_ladj(inputs(out_shape(t, shape)), c)
    (y.square().sum() + ladj.sum() + x2.square().sum() + ladj2.sum()).backward()
    for pname, p in t.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_state_dict_round_trip(name, shape):
    t, c = build(name, shape, conditional=True)
    entry = TRANSFORMS[name]
    fresh = entry.make(shape, C if entry.context else 0).double().eval()
    state_round_trip(t, fresh)
    x = inputs(shape, entry.unit)
    for a, b in zip(t.forward_and_ladj(x, c), fresh.forward_and_ladj(x, c), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "shape"), CONTEXT_CASES)
def test_context_changes_output(name, shape):
    t, c = build(name, shape, conditional=True)
    x = inputs(shape)
    y1, _l1 = t.forward_and_ladj(x, c)
    y2, _l2 = t.forward_and_ladj(x, c + 1.0)
    assert (y1 - y2).abs().max() > 1e-6
    # It reaches every transformed entry: for MADE the first in the order too, which only
    # the context can influence; a coupling's identity entries stay as they are.
    changed = ((y1 - y2).abs() > 1e-9).any(dim=0)
    inner = t.transform if isinstance(t, T.Inverse) else t
    if isinstance(inner, T.Coupling):
        assert changed[inner.mask].all() and not changed[~inner.mask].any()
    elif not isinstance(t, T.Compose | T.FactorOut | T.MultiScale):
        assert changed.all()


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_wrong_event_shape_is_an_error(name, shape):
    t, _ = build(name, shape)
    expected = rf"shape \(B, {', '.join(map(str, shape))}\)"
    with pytest.raises(ValueError, match=expected):
        t.forward_and_ladj(torch.randn(4, math.prod(shape) + 1, dtype=torch.float64))
    expected = rf"shape \(B, {', '.join(map(str, out_shape(t, shape)))}\)"
    with pytest.raises(ValueError, match=expected):
        t.inverse_and_ladj(torch.randn(4, *shape, 1, dtype=torch.float64))


# -- vectors compute what they computed before event shapes ----------------------------------


def test_vector_coupling_is_todays_computation():
    # The coupling before event shapes: gather both halves, condition on the first, reassemble
    # by cat and an inverse permutation. The index_copy reassembly must give the same bits.
    t = perturb(T.SplineCoupling(5, flip=True, hidden=(8,), context_features=2).double(), 0.3)
    x, c = inputs((5,)), torch.randn(16, 2, dtype=torch.float64)
    x_id, x_tr = x[:, t.identity_idx], x[:, t.transformed_idx]
    raw = torch.nn.Sequential.forward(t.conditioner, torch.cat([x_id, c], dim=-1))
    params = raw.view(16, -1, t.transformer.num_params)
    y_tr, log_deriv = t.transformer.forward_and_log_deriv(x_tr, params)
    expected = torch.cat([x_id, y_tr], dim=1)[:, t._unsplit]
    y, ladj = t.forward_and_ladj(x, c)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    torch.testing.assert_close(ladj, log_deriv.sum(dim=1), rtol=0, atol=0)


def test_vector_coupling_state_dict_keys_are_unchanged():
    # Checkpoints written before event shapes load: same keys, MLP layers at conditioner.<i>.
    keys = set(T.AffineCoupling(4, hidden=(8,), context_features=1).state_dict())
    assert keys == {
        "identity_idx",
        "transformed_idx",
        "_unsplit",
        "conditioner.0.weight",
        "conditioner.0.bias",
        "conditioner.2.weight",
        "conditioner.2.bias",
    }
    assert isinstance(T.AffineCoupling(4).conditioner, MLPConditioner)
    assert torch.equal(T.AffineCoupling(4).mask, torch.tensor([False, False, True, True]))
    assert torch.equal(T.AffineCoupling(5, flip=True).mask, T.channel_mask((5,), flip=True))


# -- event shapes: masks, conditioners, per-channel statistics -------------------------------


def test_masks():
    board = T.checkerboard_mask((2, 3, 3))
    assert board.shape == (2, 3, 3) and board.dtype == torch.bool
    assert torch.equal(board[0], board[1])
    assert board[0].tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    assert torch.equal(T.checkerboard_mask((2, 3, 3), flip=True), ~board)
    assert T.checkerboard_mask((4,)).tolist() == [False, True, False, True]
    channels = T.channel_mask((3, 2, 2))
    assert channels[:2].sum() == 0 and channels[2].all()
    assert T.channel_mask((3, 2, 2), flip=True)[0].all()
    with pytest.raises(ValueError, match="at least 2 entries"):
        T.channel_mask((1, 4, 4))
    with pytest.raises(ValueError, match="at least 2 positions"):
        T.checkerboard_mask((3, 1, 1))


def test_coupling_masks_are_validated():
    with pytest.raises(ValueError, match=r"event shape \(2, 4, 4\).*got shape \(4, 4\)"):
        T.AffineCoupling((2, 4, 4), mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="both True and False"):
        T.AffineCoupling((1, 2, 2), mask=torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="conditioner must be one of mlp, conv, resnet"):
        T.AffineCoupling((1, 2, 2), conditioner="unet")
    with pytest.raises(ValueError, match=r"takes image events \(C, H, W\)"):
        T.AffineCoupling(4, conditioner="conv")


def test_a_custom_conditioner_module_is_used_as_given():
    mask = T.checkerboard_mask((1, 4, 4))
    net = ConvConditioner(mask, 2, hidden=(4,))
    t = T.AffineCoupling((1, 4, 4), mask=mask, conditioner=net)
    assert t.conditioner is net
    x = torch.randn(3, 1, 4, 4)
    # Zero-initialised last layer: the coupling starts as the identity.
    assert net(x).shape == (3, 8, 2) and not net(x).any()
    torch.testing.assert_close(t(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("kind", [ConvConditioner, ResNetConditioner])
def test_conv_conditioner_reads_only_the_identity_entries(kind):
    mask = T.checkerboard_mask((2, 4, 4))
    net = perturb(kind(mask, 3, hidden=(8, 8), context_features=2).double(), 0.3)
    x, c = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: net(v, c).sum(0), x)  # (n, P, B, C, H, W)
    reads = jac.abs().sum(dim=(0, 1, 2)) > 0
    assert not reads[mask].any() and reads[~mask].all()


def test_vector_only_transforms_refuse_images():
    with pytest.raises(ValueError, match=r"flat vectors \(D,\), got event shape \(2, 4, 4\)"):
        T.MaskedAffineAutoregressive((2, 4, 4))
    with pytest.raises(ValueError, match="must start with the permutation's length 3"):
        T.Permutation(torch.tensor([2, 0, 1]), event_shape=(2, 4, 4))
    with pytest.raises(TypeError, match=r"features must be a positive int D .* \(C, H, W\)"):
        T.ActNorm(2.0)
    with pytest.raises(ValueError, match=r"features\[1\] must be a positive int, got 0"):
        T.ElementwiseAffine((2, 0, 4))


def test_actnorm_is_per_channel_on_images():
    t = T.ActNorm((3, 4, 5))
    assert t.loc.shape == (3, 1, 1)
    scale = torch.tensor([0.5, 2.0, 10.0]).view(3, 1, 1)
    x = torch.randn(200, 3, 4, 5) * scale + torch.tensor([1.0, -3.0, 7.0]).view(3, 1, 1)
    y, ladj = t.forward_and_ladj(x)
    # Statistics over the batch and the positions, one per channel.
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(ladj, -20 * t.log_scale.sum().expand(200))


def test_lu_linear_on_images_is_a_1x1_convolution():
    t = perturb(T.LULinear((4, 3, 2), seed=2).double(), std=0.3)
    w = t.weight()
    x = torch.randn(5, 4, 3, 2, dtype=torch.float64)
    y, ladj = t.forward_and_ladj(x)
    torch.testing.assert_close(y, F.conv2d(x, w[:, :, None, None], t.bias))
    torch.testing.assert_close(ladj, 6 * torch.linalg.slogdet(w)[1].expand(5))


def test_permutations_act_on_channels():
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(T.Reverse((3, 4, 4))(x), x.flip(1), rtol=0, atol=0)
    perm = T.RandomPermutation((3, 4, 4), seed=1)
    torch.testing.assert_close(perm(x), x[:, perm.permutation], rtol=0, atol=0)


def test_sum_except_batch_and_check_event():
    from flowforge.transforms.base import check_event, sum_except_batch

    x = torch.arange(24.0).view(2, 3, 4)
    assert sum_except_batch(x).tolist() == [66.0, 210.0]
    assert sum_except_batch(x[:, 0]).tolist() == [6.0, 54.0]
    check_event(x, (3, 4))
    with pytest.raises(ValueError, match=r"^y must have shape \(B, 4, 3\), got \(2, 3, 4\)$"):
        check_event(x, (4, 3), "y")


# -- as before -------------------------------------------------------------------------------


def test_compose_rejects_non_transforms():
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        T.Compose([T.Reverse(2), torch.nn.Linear(2, 2)])


def test_actnorm_initialises_from_first_batch_and_only_once():
    t = T.ActNorm(3)
    x = torch.randn(500, 3) * torch.tensor([0.5, 2.0, 10.0]) + torch.tensor([1.0, -3.0, 7.0])
    y, _ladj = t.forward_and_ladj(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(3), atol=1e-5, rtol=0)
    assert bool(t.initialized)
    loc = t.loc.detach().clone()
    t.forward_and_ladj(x + 100)
    torch.testing.assert_close(t.loc.detach(), loc)
    # A loaded ActNorm keeps its state: it is not initialised again on the next batch.
    fresh = state_round_trip(t, T.ActNorm(3))
    fresh.forward_and_ladj(x + 100)
    torch.testing.assert_close(fresh.loc.detach(), loc)


def test_lu_linear_weight_and_determinant():
    t = perturb(T.LULinear(4, seed=2).double(), std=0.3)
    w = t.weight()
    x = torch.randn(3, 4, dtype=torch.float64)
    y, ladj = t.forward_and_ladj(x)
    torch.testing.assert_close(y, x @ w.T + t.bias)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(w)[1].expand(3))


def test_permutation_rejects_non_permutations():
    with pytest.raises(ValueError, match="exactly once"):
        T.Permutation(torch.tensor([0, 0, 2]))


def test_coupling_needs_two_features():
    with pytest.raises(ValueError, match="at least 2 features"):
        T.AffineCoupling(1)


# -- image transforms: squeeze, split and merge are permutations; the logit ------------------


def test_squeeze_is_space_to_depth_and_an_exact_permutation():
    t = T.Squeeze((2, 4, 6))
    assert t.out_shape == (8, 2, 3) == T.squeezed_shape((2, 4, 6))
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float64).view(2, 2, 4, 6)
    y, ladj = t.forward_and_ladj(x)
    assert y.shape == (2, 8, 2, 3) and not ladj.any()
    # Entry (c, 2i + a, 2j + b) goes to (4c + 2a + b, i, j).
    for c, i, j, a, b in [(0, 0, 0, 0, 0), (1, 1, 2, 1, 0), (0, 1, 1, 0, 1), (1, 0, 2, 1, 1)]:
        assert y[1, 4 * c + 2 * a + b, i, j] == x[1, c, 2 * i + a, 2 * j + b]
    assert torch.equal(y.flatten(1).sort(dim=1).values, x.flatten(1))  # each entry once
    back, inv_ladj = t.inverse_and_ladj(y)
    assert torch.equal(back, x) and not inv_ladj.any()


def test_squeeze_refuses_odd_sizes_and_vectors():
    with pytest.raises(ValueError, match=r"even height and width, got shape \(1, 5, 4\)"):
        T.Squeeze((1, 5, 4))
    with pytest.raises(ValueError, match=r"takes image events \(C, H, W\), got event shape \(6,\)"):
        T.Squeeze((6,))


def test_split_and_merge_are_exact_permutations():
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    # Nothing transforms either half: the factor-out gives its input back, bit for bit.
    for t in [T.FactorOut((4, 4, 4)), T.FactorOut((4, 4, 4), inner=T.Compose([]))]:
        y, ladj = t.forward_and_ladj(x)
        assert torch.equal(y, x) and not ladj.any()
        assert torch.equal(t.inverse(y), x)
    # Two scales of squeeze and split with identity steps: a fixed permutation of the entries.
    identity = T.Compose([])
    t = T.MultiScale((4, 4, 4), identity, T.MultiScale((8, 2, 2), identity))
    ramp = torch.arange(64, dtype=torch.float64).view(1, 4, 4, 4)
    perm = t(ramp).flatten().long()
    assert torch.equal(perm.sort().values, torch.arange(64))
    torch.testing.assert_close(t(x).flatten(1), x.flatten(1)[:, perm], rtol=0, atol=0)
    assert torch.equal(t.inverse(t(x)), x)


def test_factor_out_leaves_half_and_conditions_it_on_the_rest():
    t = perturb(T.FactorOut((4, 2, 2), inner=T.ActNorm((2, 2, 2)), prior=True).double(), 0.3)
    assert T.kept_shape((4, 2, 2)) == (2, 2, 2) and T.kept_shape((5,)) == (3,)
    x = torch.randn(5, 4, 2, 2, dtype=torch.float64)
    y = t(x)
    # The kept channels go through the inner transform only; the leaving ones through the prior,
    # which reads the kept ones.
    torch.testing.assert_close(y[:, :2], t.inner(x[:, :2]), rtol=0, atol=0)
    moved = x.clone()
    moved[:, :2] += 1.0
    assert (t(moved)[:, 2:] - y[:, 2:]).abs().min() > 0
    with pytest.raises(ValueError, match=r"at least 2 channels, got event shape \(1, 4, 4\)"):
        T.FactorOut((1, 4, 4))
    with pytest.raises(TypeError, match="inner must be a flowforge Transform"):
        T.FactorOut((2, 4, 4), inner=torch.nn.Identity())
    with pytest.raises(TypeError, match="prior must be True or False"):
        T.FactorOut((2, 4, 4), prior=1)
    with pytest.raises(ValueError, match="with inner=None nothing leaves"):
        T.MultiScale((2, 4, 4), T.Compose([]), prior=True)
    with pytest.raises(TypeError, match="transform must be a flowforge Transform"):
        T.MultiScale((2, 4, 4), torch.nn.Identity())


def test_logit_values_and_domain():
    t = T.Logit((1, 2, 2), alpha=0.1)
    x = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    y, ladj = t.forward_and_ladj(x)
    s = 0.1 + 0.8 * x
    torch.testing.assert_close(y, torch.log(s / (1 - s)))
    torch.testing.assert_close(ladj, (math.log(0.8) - torch.log(s * (1 - s))).sum().view(1))
    assert y[0, 0, 1, 0] == 0.0  # x = 1/2 is the logit's centre
    with pytest.raises(ValueError, match=r"x in \[0, 1\].*got values in \[-0.5, 1\]"):
        t(torch.tensor([-0.5, 0.0, 0.0, 1.0]).view(1, 1, 2, 2))
    for alpha in (0.0, 0.5, -0.1):
        with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 0.5\)"):
            T.Logit(4, alpha=alpha)


def test_resnet_conditioner_is_residual_blocks_started_at_zero():
    net = ResNetConditioner(T.channel_mask((2, 4, 4)), 2, hidden=(8, 8, 4))
    blocks = [m for m in net.net if type(m).__name__ == "_ResidualBlock"]
    assert len(blocks) == 3  # one per entry of hidden
    assert isinstance(blocks[-1].skip, torch.nn.Conv2d)  # the width changes 8 -> 4
    x = torch.randn(3, 2, 4, 4)
    assert net(x).shape == (3, 16, 2) and not net(x).any()  # zero at the start


def test_logit_inverse_is_stable_far_out():
    t = T.Logit(3, alpha=0.05)
    y = torch.tensor([[-60.0, 0.0, 60.0]], dtype=torch.float64)
    x, ladj = t.inverse_and_ladj(y)
    assert torch.isfinite(x).all() and torch.isfinite(ladj).all()
    # sigmoid saturates to 0 and 1: x reaches the ends of the logit's domain, just outside [0, 1].
    torch.testing.assert_close(x[0, [0, 2]], torch.tensor([-0.05 / 0.9, 0.95 / 0.9]).double())
