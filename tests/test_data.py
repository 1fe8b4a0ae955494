"""Tests of flowforge.data: toy densities, digits, user files, datasets, standardisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import flowforge as ff
from flowforge.data import (
    CHECKERBOARD_ENTROPY,
    TOY_DENSITIES,
    TOY_SIZES,
    Dataset,
    Standardize,
    checkerboard,
    checkerboard_log_prob,
    eight_gaussians,
    eight_gaussians_entropy,
    eight_gaussians_log_prob,
    fit_standardization,
    load,
    load_array,
    load_digits_dataset,
    monte_carlo_entropy,
    split_array,
)
from flowforge.distributions import Model, StandardNormal
from helpers import perturb, state_round_trip

TOY = list(TOY_DENSITIES)
EXACT = {"checkerboard": checkerboard_log_prob, "8gaussians": eight_gaussians_log_prob}


def grid(lo: float, hi: float, h: float) -> tuple[torch.Tensor, float]:
    """Midpoints of a square grid of step ``h`` on ``[lo, hi]^2``, float64, and the cell area."""
    c = torch.arange(lo + h / 2, hi, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), h * h


# -- toy samplers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOY)
def test_toy_sampler_is_deterministic_and_in_range(name):
    sample = TOY_DENSITIES[name].sample
    x = sample(20_000, seed=3)
    assert x.shape == (20_000, 2) and x.dtype == torch.float32
    torch.testing.assert_close(sample(20_000, seed=3), x, rtol=0, atol=0)
    # a generator seeded like seed= gives the same draw; no seed means seed 0
    torch.testing.assert_close(sample(20_000, generator=torch.Generator().manual_seed(3)), x)
    torch.testing.assert_close(sample(100), sample(100, seed=0))
    assert not torch.equal(sample(20_000, seed=4), x)
    assert bool(torch.isfinite(x).all())
    assert float(x.abs().max()) < 6.0
    inside = (x.abs() <= 4).all(dim=1).float().mean()
    assert inside > 0.99
    # not collapsed: spread over a good part of the box in both coordinates
    assert bool((x.std(dim=0) > 0.5).all())


@pytest.mark.parametrize("name", TOY)
def test_toy_sampler_rejects_bad_arguments(name):
    sample = TOY_DENSITIES[name].sample
    with pytest.raises(ValueError, match="n must be a positive int"):
        sample(0)
    with pytest.raises(TypeError, match="n must be a positive int"):
        sample(2.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        sample(10, seed="1")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        sample(10, seed=-1)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        sample(10, generator=3)


def test_rings_and_circles_have_their_radii():
    r = ff.data.rings(40_000, seed=1).norm(dim=1)
    nearest = (r.unsqueeze(1) - torch.tensor([0.75, 1.5, 2.25, 3.0])).abs().min(dim=1).values
    assert float(nearest.quantile(0.99)) < 0.3  # radial noise 0.08
    r = ff.data.circles(40_000, seed=1).norm(dim=1)
    near_outer = (r - 3.0).abs() < 0.5
    near_inner = (r - 1.5).abs() < 0.5
    assert bool((near_outer | near_inner).all())
    assert abs(near_outer.float().mean() - 0.5) < 0.02


def test_eight_gaussians_sits_on_its_circle():
    x = eight_gaussians(40_000, seed=2).double()
    centres = (
        ff.data.EIGHT_GAUSSIANS_RADIUS
        * torch.stack(
            [torch.cos(torch.arange(8) * math.pi / 4), torch.sin(torch.arange(8) * math.pi / 4)], 1
        ).double()
    )
    d2, k = (x.unsqueeze(1) - centres).pow(2).sum(2).min(dim=1)
    # each coordinate's deviation from its centre has variance sigma^2
    assert abs(float(d2.mean() / 2) - ff.data.EIGHT_GAUSSIANS_STD**2) < 0.005
    counts = torch.bincount(k, minlength=8).double() / len(x)
    assert float((counts - 1 / 8).abs().max()) < 0.01


# -- exact densities ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXACT))
def test_exact_log_prob_integrates_to_one(name):
    pts, area = grid(-6.0, 6.0, 0.02)
    total = float(EXACT[name](pts).exp().sum() * area)
    assert abs(total - 1.0) < 1e-4


@pytest.mark.parametrize("name", list(EXACT))
def test_exact_log_prob_matches_histogram_frequencies(name):
    n = 200_000
    x = TOY_DENSITIES[name].sample(n, seed=11).double()
    edges = torch.arange(-5.0, 5.0 + 1e-9, 1.0, dtype=torch.float64)
    nb = len(edges) - 1
    ix = torch.bucketize(x[:, 0].contiguous(), edges, right=True) - 1
    iy = torch.bucketize(x[:, 1].contiguous(), edges, right=True) - 1
    keep = (ix >= 0) & (ix < nb) & (iy >= 0) & (iy < nb)
    observed = torch.bincount(ix[keep] * nb + iy[keep], minlength=nb * nb).double()
    # expected counts: the density integrated over each bin by a fine midpoint rule
    pts, area = grid(-5.0, 5.0, 0.02)
    mass = EXACT[name](pts).exp() * area
    jx = ((pts[:, 0] + 5) // 1).long()
    jy = ((pts[:, 1] + 5) // 1).long()
    expected = torch.zeros(nb * nb, dtype=torch.float64).index_add_(0, jx * nb + jy, mass) * n
    z = (observed - expected).abs() / expected.clamp_min(1.0).sqrt()
    assert float(z.max()) < 5.0
    assert float(observed.sum()) > 0.99 * n


def test_checkerboard_log_prob_values():
    x = torch.tensor(
        [
            [-3.0, -3.0],  # black square
            [-3.0, -1.0],  # white square
            [1.0, 1.0],  # black
            [5.0, 1.0],  # outside the box
            [-2.0, -1.0],  # on the edge between a white and a black square
            [4.0, -4.0],  # corner of the box, corner of a black square
        ]
    )
    lp = checkerboard_log_prob(x)
    inf = -math.inf
    expected = torch.tensor([-math.log(32), inf, -math.log(32), inf, -math.log(32), -math.log(32)])
    torch.testing.assert_close(lp, expected)
    assert lp.dtype == torch.float32
    assert checkerboard_log_prob(x.double()).dtype == torch.float64


def test_checkerboard_samples_all_lie_in_its_support():
    lp = checkerboard_log_prob(checkerboard(1_000_000, seed=5))
    assert bool(torch.isfinite(lp).all())


def test_monte_carlo_entropy_of_the_checkerboard_is_ln_32():
    est = monte_carlo_entropy(checkerboard, checkerboard_log_prob, n=100_000, seed=1)
    assert abs(est.nats - CHECKERBOARD_ENTROPY) < 1e-9
    assert est.stderr < 1e-6 and est.n == 100_000


def test_eight_gaussians_entropy_agrees_with_quadrature():
    est = eight_gaussians_entropy()
    pts, area = grid(-6.0, 6.0, 0.02)
    lp = eight_gaussians_log_prob(pts)
    exact = float(-(lp.exp() * lp).sum() * area)
    assert 1e-4 < est.stderr < 3e-3
    assert abs(est.nats - exact) < 5 * est.stderr
    # below the entropy of separated components, ln 8 + ln(2 pi e sigma^2), by their overlap
    separated = math.log(8) + math.log(2 * math.pi * math.e * ff.data.EIGHT_GAUSSIANS_STD**2)
    assert exact < separated


def test_monte_carlo_entropy_refuses_a_mismatched_log_prob():
    with pytest.raises(ValueError, match="do not match"):
        monte_carlo_entropy(eight_gaussians, checkerboard_log_prob, n=10_000)


def test_toy_log_prob_rejects_bad_points():
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        eight_gaussians_log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        checkerboard_log_prob([[0.0, 0.0]])
    with pytest.raises(TypeError, match="floating-point"):
        checkerboard_log_prob(torch.zeros(4, 2, dtype=torch.long))


# -- digits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_dataset()


@pytest.fixture(scope="module")
def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.int64), bunch.target


def test_digits_split_sizes_values_and_labels(digits, raw_digits):
    assert digits.sizes == (1000, 350, 447)
    assert digits.event_shape == (64,) and digits.dim == 64
    assert digits.levels == 17 and digits.log_prob is None and digits.entropy is None
    values, targets = raw_digits
    recovered = []
    for split in ("train", "val", "test"):
        x = getattr(digits, split)
        assert x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
        v = torch.floor(x * 17)
        # dequantisation noise is inside each level, not at its edges
        assert 0.0 < float((x * 17 - v).min()) and float((x * 17 - v).max()) < 1.0
        y = digits.labels[split]
        assert y.dtype == torch.long and y.shape == (len(x),)
        assert set(y.tolist()) == set(range(10))
        recovered.append((v.long().numpy(), y.numpy()))
    # train + val + test is exactly the 1797 digits with their labels: a disjoint partition
    rows = np.concatenate([np.column_stack(r) for r in recovered])
    original = np.column_stack([values, targets])
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(original, axis=0))
    assert len(rows) == len(original)
    # no pixel value identical across splits: noise was drawn per pixel
    assert not torch.equal(digits.train[:5], digits.val[:5])


def test_digits_images_and_seeds(digits):
    images = load_digits_dataset(image=True)
    assert images.event_shape == (1, 8, 8) and images.test.shape == (447, 1, 8, 8)
    torch.testing.assert_close(images.train.reshape(1000, 64), digits.train, rtol=0, atol=0)
    torch.testing.assert_close(images.labels["val"], digits.labels["val"])
    other = load_digits_dataset(seed=1)
    # another seed: other noise, same split
    assert not torch.equal(other.train, digits.train)
    torch.testing.assert_close(torch.floor(other.train * 17), torch.floor(digits.train * 17))
    torch.testing.assert_close(other.labels["test"], digits.labels["test"])


def test_dequantize_is_exact_and_checked():
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 256, (100_000,), generator=g)
    x = ff.data.dequantize(v, 256, g)
    assert float(x.max()) < 1.0 and float(x.min()) > 0.0
    torch.testing.assert_close(torch.floor(x * 256).long(), v)
    with pytest.raises(TypeError, match="integer tensor"):
        ff.data.dequantize(v.float(), 256, g)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 16\]"):
        ff.data.dequantize(torch.tensor([3, 17]), 17, g)


# -- user files: round trips ----------------------------------------------------------------------


def test_npy_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "x.npy", x)
    y = load_array(tmp_path / "x.npy")
    assert y.dtype == torch.float32 and y.shape == (50, 3)
    np.testing.assert_allclose(y.numpy(), x.astype(np.float32))
    np.save(tmp_path / "ints.npy", np.arange(12).reshape(4, 3))
    assert load_array(str(tmp_path / "ints.npy"))[3, 2] == 11.0
    images = np.random.default_rng(1).random((6, 1, 4, 4))
    with open(tmp_path / "img.NPY", "wb") as f:  # suffixes in any case
        np.save(f, images)
    assert load_array(tmp_path / "img.NPY").shape == (6, 1, 4, 4)


def test_npy_structured_array_is_a_table(tmp_path):
    table = np.zeros(4, dtype=[("a", "f8"), ("b", "i4")])
    table["a"], table["b"] = [1.5, 2.5, 3.5, 4.5], [1, 2, 3, 4]
    np.save(tmp_path / "t.npy", table)
    np.testing.assert_array_equal(load_array(tmp_path / "t.npy")[:, 1].numpy(), [1, 2, 3, 4])
    text = np.zeros(4, dtype=[("a", "f8"), ("name", "U3")])
    np.save(tmp_path / "u.npy", text)
    with pytest.raises(ValueError, match="non-numeric field 'name'"):
        load_array(tmp_path / "u.npy")


def test_npz_round_trip_and_names(tmp_path):
    a, b = np.ones((5, 2)), np.arange(8.0).reshape(4, 2)
    np.savez(tmp_path / "one.npz", points=a)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz").numpy(), a)
    np.savez_compressed(tmp_path / "two.npz", a=a, b=b)
    np.testing.assert_array_equal(load_array(tmp_path / "two.npz", name="b").numpy(), b)
    with pytest.raises(ValueError, match=r"holds 2 arrays \('a', 'b'\)"):
        load_array(tmp_path / "two.npz")
    with pytest.raises(ValueError, match=r"no array named 'c'; it holds 'a', 'b'"):
        load_array(tmp_path / "two.npz", name="c")
    np.save(tmp_path / "p.npy", a)
    with pytest.raises(ValueError, match=r"selects an array of an \.npz file"):
        load_array(tmp_path / "p.npy", name="a")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="holds no arrays"):
        load_array(tmp_path / "none.npz")


def test_csv_round_trips(tmp_path):
    (tmp_path / "h.csv").write_text("x, y\n1, 2\n3,4\n\n5,6e-1\n")
    (tmp_path / "n.csv").write_text("1,2\n3,4\n5,0.6\n")
    for name in ("h.csv", "n.csv"):
        y = load_array(tmp_path / name)
        np.testing.assert_allclose(y.numpy(), [[1, 2], [3, 4], [5, 0.6]], rtol=1e-6)
    x = np.random.default_rng(0).normal(size=(20, 3))
    np.savetxt(tmp_path / "s.csv", x, delimiter=",", header="a,b,c")  # a "# a,b,c" header
    np.testing.assert_allclose(load_array(tmp_path / "s.csv").numpy(), x, rtol=1e-6)
    (tmp_path / "one.csv").write_text("v\n1\n2\n3\n")
    assert load_array(tmp_path / "one.csv").shape == (3, 1)


# -- user files: every bad input ------------------------------------------------------------------


def test_missing_file_and_unsupported_types(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nope\.csv"):
        load_array(tmp_path / "nope.csv")
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"unsupported file type '.txt'.*\.npy, \.npz, \.csv"):
        load_array(tmp_path / "data.txt")
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        load_array(3)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_empty_files(tmp_path, suffix):
    (tmp_path / f"e{suffix}").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        load_array(tmp_path / f"e{suffix}")


def test_csv_without_data_rows(tmp_path):
    (tmp_path / "h.csv").write_text("x,y\n\n")
    with pytest.raises(ValueError, match="a header row but no data rows"):
        load_array(tmp_path / "h.csv")
    (tmp_path / "b.csv").write_text("\n,\n# only a comment\n")
    with pytest.raises(ValueError, match="has no data rows"):
        load_array(tmp_path / "b.csv")


def test_csv_ragged_rows_name_their_lines(tmp_path):
    (tmp_path / "r.csv").write_text("x,y,z\n1,2,3\n4,5\n6,7,8\n9,10,11,12\n")
    with pytest.raises(ValueError) as e:
        load_array(tmp_path / "r.csv")
    msg = str(e.value)
    assert "2 rows of 4" in msg and "3 fields of the header" in msg
    assert "line 3 has 2" in msg and "line 5 has 4" in msg


def test_csv_non_numeric_columns_name_the_column_and_a_value(tmp_path):
    (tmp_path / "t.csv").write_text("x,y,label\n1,2,cat\n3,,dog\n5,6,7\n")
    with pytest.raises(ValueError) as e:
        load_array(tmp_path / "t.csv")
    msg = str(e.value)
    assert "non-numeric values in 2 columns" in msg
    assert "column 3 'label' (2 rows, e.g. 'cat' on line 2)" in msg
    assert "column 2 'y' (1 row, e.g. '' on line 3)" in msg
    # without a header, columns are numbered from 1
    (tmp_path / "u.csv").write_text("1,2\n3,abc\n5,6\n")
    with pytest.raises(ValueError, match=r"column 2 \(1 row, e.g. 'abc' on line 2\)"):
        load_array(tmp_path / "u.csv")


def test_csv_nan_and_inf_rows(tmp_path):
    (tmp_path / "n.csv").write_text("x,y\n1,nan\n3,4\ninf,6\n7,8\n")
    with pytest.raises(ValueError) as e:
        load_array(tmp_path / "n.csv")
    msg = str(e.value)
    assert "NaN or infinite values in 2 of 4 rows (lines 2, 4)" in msg
    assert "column 1 'x', column 2 'y'" in msg


def test_npy_nan_rows_and_pixels(tmp_path):
    x = np.zeros((10, 3))
    x[[2, 7], 1] = np.nan
    x[7, 2] = -np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"2 of 10 rows \(row indices 2, 7\), in 2 columns: 1, 2"):
        load_array(tmp_path / "x.npy")
    img = np.zeros((5, 1, 4, 4))
    img[3, 0, 2, 1] = np.nan
    np.save(tmp_path / "img.npy", img)
    with pytest.raises(ValueError, match=r"1 of 5 rows \(row index 3\), in 1 pixel.*\(0, 2, 1\)"):
        load_array(tmp_path / "img.npy")


def test_values_beyond_float32(tmp_path):
    (tmp_path / "big.csv").write_text("1,2\n3,4\n5,1e300\n")
    with pytest.raises(ValueError, match=r"float32 range.*line 3.*column 2"):
        load_array(tmp_path / "big.csv")


@pytest.mark.parametrize(
    ("shape", "hint"),
    [
        ((), "a single number"),
        ((10,), r"x.reshape\(-1, 1\)"),
        ((10, 8, 8), r"x\[:, None\]"),
        ((10, 1, 2, 2, 2), "too many axes"),
    ],
)
def test_wrong_rank(tmp_path, shape, hint):
    np.save(tmp_path / "x.npy", np.zeros(shape))
    with pytest.raises(ValueError, match=hint):
        load_array(tmp_path / "x.npy")


def test_too_few_rows_and_no_columns(tmp_path):
    np.save(tmp_path / "two.npy", np.zeros((2, 4)))
    with pytest.raises(ValueError, match="has 2 rows; at least 3 are needed"):
        load_array(tmp_path / "two.npy")
    (tmp_path / "two.csv").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="has 2 rows"):
        load_array(tmp_path / "two.csv")
    np.save(tmp_path / "empty.npy", np.zeros((5, 0)))
    with pytest.raises(ValueError, match="its rows hold no values"):
        load_array(tmp_path / "empty.npy")


def test_corrupt_and_unsafe_numpy_files(tmp_path):
    np.save(tmp_path / "ok.npy", np.ones((100, 2)))
    good = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(good[: len(good) - 40])
    with pytest.raises(ValueError, match=r"not a valid .npy file: it is truncated.*\(100, 2\)"):
        load_array(tmp_path / "cut.npy")
    (tmp_path / "head.npy").write_bytes(good[:30])
    with pytest.raises(ValueError, match=r"not a valid \.npy file: its header is corrupt"):
        load_array(tmp_path / "head.npy")
    (tmp_path / "text.npy").write_bytes(b"1,2\n3,4\n5,6\n")
    with pytest.raises(ValueError, match=r"not a valid \.npy file: it does not start"):
        load_array(tmp_path / "text.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"Python objects.*unpickling"):
        load_array(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]] * 4))
    with pytest.raises(ValueError, match=r"holds text \(dtype <U1\)"):
        load_array(tmp_path / "str.npy")
    np.savez(tmp_path / "ok.npz", a=np.ones((100, 2)))
    zipped = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(zipped[: len(zipped) // 2])
    with pytest.raises(ValueError, match=r"not a valid \.npz file"):
        load_array(tmp_path / "cut.npz")


# -- splitting ------------------------------------------------------------------------------------


def test_split_array_partitions_with_a_fixed_seed():
    x = torch.arange(100.0).unsqueeze(1)
    train, val, test = split_array(x)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    together = torch.cat([train, val, test]).squeeze(1).sort().values
    torch.testing.assert_close(together, x.squeeze(1))
    again = split_array(x)
    torch.testing.assert_close(again[2], test)
    assert not torch.equal(split_array(x, seed=1)[2], test)
    small = split_array(torch.zeros(3, 2))
    assert [len(s) for s in small] == [1, 1, 1]
    with pytest.raises(ValueError, match="summing to 1"):
        split_array(x, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="at least 3 rows"):
        split_array(torch.zeros(2, 2))


# -- load, available, describe --------------------------------------------------------------------


def test_available_and_describe():
    names = ff.data.available()
    assert names == [*TOY, "digits"]
    assert {"checkerboard", "8gaussians", "2spirals", "pinwheel", "rings", "moons"} < set(names)
    for name in names:
        line = ff.data.describe(name)
        assert line and "\n" not in line
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        ff.data.describe("mnist")


@pytest.mark.parametrize("name", TOY)
def test_load_toy(name):
    ds = load(name, n_train=500, n_val=200, n_test=300, seed=2)
    assert ds.sizes == (500, 200, 300) and ds.event_shape == (2,) and ds.name == name
    assert not torch.equal(ds.train[:200], ds.val)  # distinct seeds per split
    torch.testing.assert_close(ds.test, load(name, n_train=5, n_val=5, n_test=300, seed=2).test)
    assert not torch.equal(ds.test, load(name, n_train=5, n_val=5, n_test=300, seed=3).test)
    if name in EXACT:
        assert ds.log_prob is EXACT[name]
        assert ds.entropy is not None and ds.entropy_stderr is not None
        # the entropy is the mean NLL of fresh samples, within sampling error
        nll = -float(ds.log_prob(load(name, n_test=50_000).test.double()).mean())
        assert abs(nll - ds.entropy) < 0.02
    else:
        assert ds.log_prob is None and ds.entropy is None and ds.entropy_stderr is None


def test_load_toy_defaults_and_exact_entropy():
    ds = load("checkerboard")
    assert ds.sizes == TOY_SIZES
    assert ds.entropy == CHECKERBOARD_ENTROPY and ds.entropy_stderr == 0.0


def test_load_digits_and_files(tmp_path):
    ds = load("digits", image=True, seed=0)
    assert ds.event_shape == (1, 8, 8) and ds.levels == 17 and ds.labels is not None
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((40, 1, 4, 4)))
    flat = load(tmp_path / "img.npy")
    assert flat.event_shape == (16,) and flat.sizes == (32, 4, 4)
    assert load(str(tmp_path / "img.npy"), image=True).event_shape == (1, 4, 4)
    (tmp_path / "p.csv").write_text("a,b\n" + "\n".join(f"{i},{2 * i}" for i in range(30)))
    table = load(str(tmp_path / "p.csv"), seed=1)
    assert table.event_shape == (2,) and table.sizes == (24, 3, 3)
    assert table.log_prob is None and table.labels is None and table.levels is None
    with pytest.raises(ValueError, match=r"image=True needs \(N, C, H, W\) images"):
        load(tmp_path / "p.csv", image=True)
    np.savez(tmp_path / "two.npz", a=np.ones((5, 2)), b=np.zeros((6, 3)))
    assert load(tmp_path / "two.npz", key="b").event_shape == (3,)
    with pytest.raises(ValueError, match=r"key='b' selects an array of an \.npz file"):
        load(tmp_path / "p.csv", key="b")
    with pytest.raises(ValueError, match="key='b' does not apply to the built-in dataset 'digits'"):
        load("digits", key="b")


def test_load_errors_a_person_can_act_on(tmp_path):
    with pytest.raises(ValueError, match=r"did you mean 'checkerboard'\?.*8gaussians.*\.csv"):
        load("checkerbord")
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*must end with .npy"):
        load("mnist")
    with pytest.raises(FileNotFoundError, match=r"my_points\.csv"):
        load(str(tmp_path / "my_points.csv"))
    (tmp_path / "points.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        load(str(tmp_path / "points.txt"))
    with pytest.raises(ValueError, match="n_train: sizes apply to the 2-D toy datasets only"):
        load("digits", n_train=10)
    with pytest.raises(ValueError, match="image=True does not apply"):
        load("moons", image=True)
    with pytest.raises(ValueError, match="n_val must be a positive int"):
        load("moons", n_val=0)
    with pytest.raises(TypeError, match="source must be a dataset name or a path"):
        load(3)


def test_dataset_checks_its_pieces():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"val must have shape \(N, 2\)"):
        Dataset("d", x, torch.zeros(4, 3), x, event_shape=(2,))
    with pytest.raises(ValueError, match=r"labels\['test'\] must have shape \(4,\)"):
        Dataset("d", x, x, x, event_shape=(2,), labels={"test": torch.zeros(3)})
    ds = Dataset("d", x, x, x, event_shape=[2])
    assert ds.event_shape == (2,) and ds.dim == 2


# -- standardisation ------------------------------------------------------------------------------


class Gaussian(Model):
    """N(0, I) as a model with identity encode/decode and no sample_and_log_prob."""

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__()
        self.event_shape = event_shape
        self.context_dim = 0
        self.base = StandardNormal(event_shape)

    def _log_prob(self, x, context):
        return self.base.log_prob(x)

    def _encode(self, x, context):
        return x

    def _decode(self, z, context):
        return z

    def _base_sample(self, n):
        return self.base.sample(n)


MEAN, STD = torch.tensor([3.0, -2.0]), torch.tensor([0.5, 3.0])


def maf(**options) -> Model:
    torch.manual_seed(0)
    return perturb(ff.models.create("maf", dim=2, layers=1, hidden=(8,), **options), std=0.2)


def test_standardize_of_a_standard_normal_is_the_shifted_scaled_normal():
    model = Standardize(Gaussian((2,)), MEAN, STD)
    x = torch.randn(64, 2) * 4
    expected = torch.distributions.Normal(MEAN, STD).log_prob(x).sum(dim=1)
    torch.testing.assert_close(model.log_prob(x), expected)
    # the fallback sample_and_log_prob of an inner model without one
    s, lp = model.sample_and_log_prob(5000)
    torch.testing.assert_close(lp, torch.distributions.Normal(MEAN, STD).log_prob(s).sum(dim=1))
    assert float((s.mean(0) - MEAN).abs().max()) < 0.1
    assert float((s.std(0) / STD - 1).abs().max()) < 0.05


def test_standardize_log_prob_integrates_to_one():
    model = Standardize(maf(), MEAN, STD)
    c = torch.arange(-9.0, 9.0, 0.03) + 0.015
    xx, yy = torch.meshgrid(MEAN[0] + c * STD[0], MEAN[1] + c * STD[1], indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    with torch.no_grad():
        total = model.log_prob(pts).exp().sum() * (0.03 * STD[0]) * (0.03 * STD[1])
    assert abs(float(total) - 1.0) < 2e-3


def test_standardize_delegates_to_the_inner_model():
    inner = maf()
    model = Standardize(inner, MEAN, STD)
    assert model.event_shape == (2,) and model.context_dim == 0
    x = MEAN + STD * torch.randn(32, 2)
    u = (x - MEAN) / STD
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x), inner.log_prob(u) - STD.log().sum())
        torch.testing.assert_close(model.loss(x), inner.loss(u))
        torch.testing.assert_close(model.encode(x), inner.encode(u))
        torch.testing.assert_close(model.decode(model.encode(x)), x, atol=1e-5, rtol=1e-5)
        torch.manual_seed(7)
        s = model.sample(100)
        torch.manual_seed(7)
        torch.testing.assert_close(s, inner.sample(100) * STD + MEAN)
        # flows have a one-pass sample_and_log_prob: it must agree with log_prob
        s, lp = model.sample_and_log_prob(50)
        torch.testing.assert_close(lp, model.log_prob(s), atol=1e-4, rtol=1e-4)


def test_standardize_passes_context_through():
    torch.manual_seed(0)
    inner = perturb(ff.models.create("maf", dim=2, layers=1, hidden=(8,), context_dim=3))
    model = Standardize(inner, MEAN, STD)
    x, c = torch.randn(8, 2), torch.randn(8, 3)
    with torch.no_grad():
        expected = inner.log_prob((x - MEAN) / STD, c) - STD.log().sum()
        torch.testing.assert_close(model.log_prob(x, c), expected)
        assert model.sample(4, c[0]).shape == (4, 2)
    with pytest.raises(ValueError, match="this model is conditional"):
        model.log_prob(x)


def test_standardize_state_dict_round_trip_keeps_mean_and_std():
    model = Standardize(maf(), MEAN, STD)
    assert {"mean", "std"} <= set(model.state_dict())
    fresh = Standardize(ff.models.create("maf", dim=2, layers=1, hidden=(8,)), 0.0, 1.0)
    fresh = state_round_trip(model, fresh)
    torch.testing.assert_close(fresh.mean, MEAN)
    torch.testing.assert_close(fresh.std, STD)
    x = torch.randn(16, 2)
    with torch.no_grad():
        torch.testing.assert_close(fresh.log_prob(x), model.log_prob(x))


def test_standardize_json_round_trip():
    model = Standardize(Gaussian((1, 2, 2)), torch.arange(4.0).reshape(1, 2, 2), 2.0)
    data = json.loads(json.dumps(model.to_dict()))
    again = Standardize.from_dict(Gaussian((1, 2, 2)), data)
    torch.testing.assert_close(again.mean, model.mean, rtol=0, atol=0)
    torch.testing.assert_close(again.std, torch.full((1, 2, 2), 2.0))
    with pytest.raises(ValueError, match="lacks std"):
        Standardize.from_dict(Gaussian((2,)), {"mean": [0.0, 0.0]})
    with pytest.raises(ValueError, match=r"mean must have the model's event_shape \(2,\)"):
        Standardize.from_dict(Gaussian((2,)), {"mean": [0.0], "std": [1.0, 1.0]})


def test_standardize_checks_its_arguments():
    with pytest.raises(TypeError, match="model must be a flowforge Model"):
        Standardize(torch.nn.Linear(2, 2), 0.0, 1.0)
    with pytest.raises(ValueError, match="std must be positive"):
        Standardize(Gaussian((2,)), 0.0, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"mean must have the model's event_shape \(2,\)"):
        Standardize(Gaussian((2,)), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Standardize(Gaussian((2,)), torch.tensor([0.0, math.nan]), 1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        Standardize(Gaussian((2,)), 0.0, 1.0).log_prob(torch.zeros(3, 3))


def test_fit_standardization():
    x = torch.tensor([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [4.0, 5.0, 5.0]])
    mean, std = fit_standardization(x)
    torch.testing.assert_close(mean, torch.tensor([2.0, 5.0, 3.0]))
    spread = math.sqrt(8 / 3)
    # the constant feature gets the floor, relative to the widest feature
    torch.testing.assert_close(std, torch.tensor([spread, 1e-6 * spread, spread]))
    u = (x - mean) / std
    assert bool(torch.isfinite(u).all()) and float(u[:, 1].abs().max()) == 0.0
    # data in tiny units keep their own scale
    _, tiny = fit_standardization(x * 1e-12)
    torch.testing.assert_close(tiny[0], torch.tensor(spread * 1e-12))
    _, ones = fit_standardization(torch.ones(4, 2))
    torch.testing.assert_close(ones, torch.ones(2))
    mean, std = fit_standardization(torch.rand(10, 1, 8, 8))
    assert mean.shape == std.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_standardization(torch.tensor([[0.0], [math.inf]]))
    with pytest.raises(ValueError, match=r"shape \(N, \*event_shape\)"):
        fit_standardization(torch.zeros(5))


# -- column names, directories, wrapped-model messages (issue 12) -------------------------------


def test_csv_header_names_the_columns(tmp_path):
    (tmp_path / "h.csv").write_text("height, weight,,age\n1.7,60,1,30\n1.8,75,2,40\n1.6,55,3,50\n")
    x, columns = ff.data.read_columns(tmp_path / "h.csv")
    assert x.shape == (3, 4)
    assert columns == ("height", "weight", "x3", "age")  # an empty name: its position
    ds = load(tmp_path / "h.csv")
    assert ds.columns == ("height", "weight", "x3", "age")
    (tmp_path / "n.csv").write_text("1,2\n3,4\n5,6\n")
    assert ff.data.read_columns(tmp_path / "n.csv")[1] is None
    assert load(tmp_path / "n.csv").columns is None
    # a "# a,b" header (numpy.savetxt's) is a comment, not column names
    np.savetxt(tmp_path / "s.csv", np.ones((3, 2)), delimiter=",", header="a,b")
    assert load(tmp_path / "s.csv").columns is None


def test_structured_arrays_name_the_columns_plain_arrays_do_not(tmp_path):
    table = np.zeros(4, dtype=[("u", "f8"), ("v", "i4")])
    np.save(tmp_path / "t.npy", table)
    np.savez(tmp_path / "t.npz", table=table)
    np.save(tmp_path / "p.npy", np.ones((4, 2)))
    assert load(tmp_path / "t.npy").columns == ("u", "v")
    assert load(tmp_path / "t.npz").columns == ("u", "v")
    assert load(tmp_path / "p.npy").columns is None
    assert load("moons", n_train=5, n_val=5, n_test=5).columns is None


def test_dataset_checks_its_columns():
    x = torch.zeros(4, 2)
    assert Dataset("d", x, x, x, event_shape=(2,), columns=["a", "b"]).columns == ("a", "b")
    with pytest.raises(ValueError, match=r"one name per feature.*got 3 names"):
        Dataset("d", x, x, x, event_shape=(2,), columns=("a", "b", "c"))
    with pytest.raises(TypeError, match="columns must be strings"):
        Dataset("d", x, x, x, event_shape=(2,), columns=("a", 2))
    img = torch.zeros(4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"one name per feature of \(N, D\) data"):
        Dataset("d", img, img, img, event_shape=(1, 2, 2), columns=("a",))


def test_a_directory_is_not_a_dataset(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "points.csv").write_text("1,2\n3,4\n5,6\n")
    (tmp_path / "data" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"data is a directory; a dataset is a built-in name "):
        load(tmp_path / "data")
    with pytest.raises(ValueError, match=r"it holds points\.csv$"):
        load(str(tmp_path / "data"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"is a directory;.*\.npy, \.npz, \.csv$"):
        load(tmp_path / "empty")
    (tmp_path / "odd.csv").mkdir()
    with pytest.raises(ValueError, match=r"odd\.csv is a directory, not a \.csv file"):
        load(tmp_path / "odd.csv")


def test_standardize_names_the_wrapped_model_in_solver_errors():
    wrapped = Standardize(ff.models.create("nsf", dim=2, layers=1), MEAN, STD)
    with pytest.raises(TypeError, match=r"^Flow is not a continuous-time model .*\(got method\)"):
        wrapped.sample(3, method="euler")
    cnf = Standardize(ff.models.create("fm", dim=2, hidden=(8,)), MEAN, STD)
    with pytest.raises(TypeError, match=r"unknown solver option 'order'; FlowMatching takes"):
        cnf.sample(3, order=2)


# -- labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "k"),
    [
        ("8gaussians", 8),
        ("2spirals", 2),
        ("pinwheel", 5),
        ("rings", 4),
        ("moons", 2),
        ("circles", 2),
    ],
)
def test_labelled_toy_datasets_keep_their_points(name, k):
    ds = ff.data.load(name, n_train=500, n_val=50, n_test=50, seed=2)
    assert ds.num_classes == k and set(ds.labels) == {"train", "val", "test"}
    assert ds.labels["train"].dtype == torch.int64 and set(ds.labels["train"].tolist()) == set(
        range(k)
    )
    # The same points as the plain sampler draws: adding labels moved no number.
    plain = ff.data.TOY_DENSITIES[name].sample(500, seed=6)
    torch.testing.assert_close(ds.train, plain, rtol=0, atol=0)


def test_the_eight_gaussians_label_is_the_component():
    ds = ff.data.load("8gaussians", n_train=2000, n_val=10, n_test=10)
    angle = torch.atan2(ds.train[:, 1], ds.train[:, 0]) % (2 * math.pi)
    nearest = torch.round(angle / (math.pi / 4)).long() % 8
    assert (nearest == ds.labels["train"]).double().mean() > 0.99


def test_unlabelled_built_ins_and_digits():
    assert ff.data.load("checkerboard", n_train=10, n_val=3, n_test=3).labels is None
    digits = ff.data.load("digits")
    assert digits.num_classes == 10 and digits.labels["test"].shape == (447,)


def test_a_csv_label_column_is_split_with_its_rows(tmp_path):
    path = tmp_path / "t.csv"
    rows = [f"{i},{-i},{'neg' if i % 3 else 'pos'}" for i in range(60)]
    path.write_text("u,v,sign\n" + "\n".join(rows) + "\n")
    ds = ff.data.load(path, label="sign", seed=4)
    assert ds.event_shape == (2,) and ds.columns == ("u", "v")
    assert ds.label_names == ("neg", "pos") and ds.num_classes == 2
    for split in ("train", "val", "test"):
        x, y = getattr(ds, split), ds.labels[split]
        expected = (x[:, 0].long() % 3 == 0).long()  # each label stayed with its row
        assert torch.equal(y, expected)
    # By position (counted from 1), and integer labels 1..3 become 0..2 with their names kept.
    path.write_text("\n".join(f"{i % 3 + 1},{i}.5" for i in range(30)) + "\n")
    ds = ff.data.load(path, label=1)
    assert ds.label_names == ("1", "2", "3") and ds.event_shape == (1,)


@pytest.mark.parametrize(
    ("content", "label", "message"),
    [
        ("a,b\n1,2\n3,4\n5,6\n", "c", r"no column of that name; its columns are a, b"),
        ("a,kind\n1,x\n3,y\n5,x\n", "knd", r"did you mean 'kind'"),
        ("1,2\n3,4\n5,6\n", "kind", r"no header row.*column's number \(1..2\)"),
        ("1,2\n3,4\n5,6\n", 5, r"columns 1..2"),
        ("a,k\n1,0.5\n3,1\n5,0\n", "k", r"labels must be classes.*'0.5'"),
        ("a,k\n1,x\n3,x\n5,x\n", "k", r"one class \('x'\)"),
        ("a,k\n1,x\n3,\n5,y\n", "k", r"1 row without a label"),
    ],
)
def test_bad_label_columns_are_clear(tmp_path, content, label, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        ff.data.load(path, label=label)


def test_an_npz_label_array(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(40, 3)), y=np.arange(40) % 4)
    ds = ff.data.load(path, label="y")
    assert ds.event_shape == (3,) and ds.num_classes == 4
    np.savez(path, x=rng.normal(size=(40, 3)), y=np.arange(39) % 4)
    with pytest.raises(ValueError, match="39 labels but the data hold 40 samples"):
        ff.data.load(path, label="y")
    np.save(tmp_path / "d.npy", rng.normal(size=(10, 2)))
    with pytest.raises(ValueError, match=r"names a CSV column or an \.npz array"):
        ff.data.load(tmp_path / "d.npy", label="y")
    with pytest.raises(ValueError, match="label='y' does not apply to the built-in"):
        ff.data.load("digits", label="y")
