"""Tests of the user's images in flowforge.data (folders, arrays) and bits/dim in metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import flowforge as ff
from flowforge.data import Dataset, Standardize, image_layout, load, read_image_folder
from flowforge.distributions import Model
from flowforge.metrics import bits_per_dim, nll

RNG = np.random.default_rng(0)


def write_png(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def image_folder(root, classes=("cat", "dog"), per_class=5, shape=(4, 4)) -> dict[bytes, str]:
    """Class sub-folders of random grey PNGs; returns {pixels.tobytes(): class}."""
    written = {}
    for name in classes:
        for i in range(per_class):
            pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
            write_png(root / name / f"{i:02d}.png", pixels)
            written[pixels.tobytes()] = name
    return written


# -- folders --------------------------------------------------------------------------------------
def test_a_folder_of_class_folders_is_a_labelled_image_dataset(tmp_path):
    written = image_folder(tmp_path / "pets")
    ds = load(tmp_path / "pets")
    assert ds.event_shape == (1, 4, 4) and ds.image_shape == (1, 4, 4) and ds.sizes == (8, 1, 1)
    assert ds.levels == 256 and ds.dequantization == "uniform"
    assert ds.label_names == ("cat", "dog") and ds.num_classes == 2
    assert "2 class folders (cat, dog)" in ds.description and "mode L" in ds.description
    seen = 0
    for split in ("train", "val", "test"):
        x = getattr(ds, split)
        assert float(x.min()) >= 0 and float(x.max()) < 1 and x.dtype == torch.float32
        levels = ds.quantized(split)
        for v, y in zip(levels, ds.labels[split], strict=True):
            # every image comes back exactly, with the label of its folder
            key = v[0].to(torch.uint8).numpy().tobytes()
            assert ds.label_names[int(y)] == written[key]
            seen += 1
    assert seen == 10
    # dequantised, not just scaled: the noise moves x off the cell's left edge
    assert not torch.equal(ds.train, ds.quantized("train").float() / 256)


def test_folder_seeds_and_flat_images(tmp_path):
    image_folder(tmp_path / "pets")
    a, b = load(tmp_path / "pets", seed=3), load(str(tmp_path / "pets"), seed=3)
    torch.testing.assert_close(a.train, b.train, rtol=0, atol=0)
    assert not torch.equal(load(tmp_path / "pets", seed=4).train, a.train)
    flat = load(tmp_path / "pets", image=False, seed=3)
    assert flat.event_shape == (16,) and flat.image_shape == (1, 4, 4) and flat.levels == 256
    torch.testing.assert_close(flat.train, a.train.reshape(8, 16), rtol=0, atol=0)


def test_unlabelled_colour_folder_and_modes(tmp_path):
    root = tmp_path / "faces"
    colour = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # H=6, W=8
    write_png(root / "a.png", colour)
    write_png(root / "b.png", RNG.integers(0, 256, (6, 8), dtype=np.uint8))  # grey
    Image.fromarray(colour).save(root / "c.jpg", quality=95)
    ds = load(root)
    assert ds.event_shape == (3, 6, 8) and ds.labels is None and ds.num_classes is None
    assert "mode RGB (from L, RGB)" in ds.description
    values = read_image_folder(root)
    np.testing.assert_array_equal(values.values[0].permute(1, 2, 0).numpy(), colour)  # exact PNG
    grey = values.values[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grey as RGB
    assert load(root, mode="l").event_shape == (1, 6, 8)
    assert load(root, mode="RGBA").event_shape == (4, 6, 8)
    with pytest.raises(ValueError, match="mode must be one of L, RGB, RGBA; got 'CMYK'"):
        load(root, mode="CMYK")


def test_one_class_folder_gives_no_labels(tmp_path):
    image_folder(tmp_path / "only", classes=("seven",))
    ds = load(tmp_path / "only")
    assert ds.labels is None and "one class folder 'seven' (no labels)" in ds.description


def test_hidden_files_are_skipped(tmp_path):
    image_folder(tmp_path / "pets")
    (tmp_path / "pets" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "pets" / "cat" / ".hidden.txt").write_text("x")
    assert load(tmp_path / "pets").sizes == (8, 1, 1)


def test_folder_errors_name_the_file(tmp_path):
    image_folder(tmp_path / "bad", per_class=3)
    broken = tmp_path / "bad" / "dog" / "zz.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"zz\.png could not be read as an image .*valid PNG"):
        load(tmp_path / "bad")
    good = (tmp_path / "bad" / "cat" / "00.png").read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # truncated: the header reads, decoding fails
    with pytest.raises(ValueError, match=r"zz\.png could not be read as an image"):
        load(tmp_path / "bad")
    broken.unlink()

    note = tmp_path / "bad" / "cat" / "notes.txt"
    note.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt is not an image file \(\.png, \.jpg"):
        load(tmp_path / "bad")
    note.unlink()

    write_png(tmp_path / "bad" / "dog" / "big.png", np.zeros((5, 4), dtype=np.uint8))
    with pytest.raises(
        ValueError, match=r"big\.png is 4x5 \(width x height\) but .*00\.png is 4x4"
    ):
        load(tmp_path / "bad")
    (tmp_path / "bad" / "dog" / "big.png").unlink()

    write_png(tmp_path / "bad" / "dog" / "deep.png", np.zeros((4, 4, 3), dtype=np.uint16)[..., 0])
    with pytest.raises(ValueError, match=r"deep\.png has 16-bit or float pixels"):
        load(tmp_path / "bad")
    (tmp_path / "bad" / "dog" / "deep.png").unlink()

    write_png(tmp_path / "bad" / "loose.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(
        ValueError, match=r"holds both images \(loose\.png, ...\) and class folders"
    ):
        load(tmp_path / "bad")
    (tmp_path / "bad" / "loose.png").unlink()

    (tmp_path / "bad" / "cat" / "sub").mkdir()
    with pytest.raises(ValueError, match=r"sub is a folder inside the class folder 'cat'"):
        load(tmp_path / "bad")
    (tmp_path / "bad" / "cat" / "sub").rmdir()

    (tmp_path / "bad" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty holds no images"):
        load(tmp_path / "bad")
    (tmp_path / "bad" / "empty").rmdir()

    with pytest.raises(ValueError, match=r"layout='NHWC' applies to image arrays"):
        load(tmp_path / "bad", layout="NHWC")
    with pytest.raises(ValueError, match=r"levels=16 applies to arrays"):
        load(tmp_path / "bad", levels=16)
    with pytest.raises(ValueError, match="n_train: sizes apply to the 2-D toy datasets only"):
        load(tmp_path / "bad", n_train=5)
    assert load(tmp_path / "bad").sizes == (4, 1, 1)  # clean again

    write_png(tmp_path / "two" / "a.png", np.zeros((4, 4), dtype=np.uint8))
    write_png(tmp_path / "two" / "b.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="holds 2 images; at least 3 are needed"):
        load(tmp_path / "two")


def test_a_directory_without_images_is_still_no_dataset(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "points.csv").write_text("1,2\n3,4\n5,6\n")
    with pytest.raises(
        ValueError, match=r"a folder of images \(\.png, \.jpg, \.jpeg.*points\.csv$"
    ):
        load(tmp_path / "data")


# -- arrays ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "to_nchw", "layout"),
    [
        ((5, 4, 6), lambda a: a[:, None], "NHW"),
        ((5, 8, 8, 3), lambda a: a.transpose(0, 3, 1, 2), "NHWC"),
        ((5, 3, 8, 8), lambda a: a, "NCHW"),
        ((5, 1, 4, 4), lambda a: a, "NCHW"),
        ((5, 4, 4, 1), lambda a: a.transpose(0, 3, 1, 2), "NHWC"),
        ((5, 2, 6, 10), lambda a: a, "NCHW"),
    ],
)
def test_image_array_layouts_are_detected(tmp_path, shape, to_nchw, layout):
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "x.npy", array)
    ds = load(tmp_path / "x.npy", image=True, seed=2)
    expected = to_nchw(array)
    assert ds.event_shape == expected.shape[1:] and ds.levels == 256
    assert f"layout {layout} (detected)" in ds.description
    got = torch.cat([ds.quantized(s) for s in ("train", "val", "test")])
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(2))  # split_array's shuffle
    np.testing.assert_array_equal(got.numpy(), expected[perm.numpy()])


def test_ambiguous_and_given_layouts(tmp_path):
    array = RNG.integers(0, 256, (5, 4, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", array)
    assert (
        "layout NCHW (assumed: the channel axis is ambiguous"
        in load(tmp_path / "x.npy", image=True).description
    )
    ds = load(tmp_path / "x.npy", image=True, layout="nhwc")
    assert "layout NHWC (given)" in ds.description
    np.testing.assert_array_equal(
        torch.cat([ds.quantized(s) for s in ("train", "val", "test")]).sort(0).values.numpy(),
        torch.from_numpy(array.transpose(0, 3, 1, 2)).long().sort(0).values.numpy(),
    )
    with pytest.raises(ValueError, match="layout='NHW' describes 3-D arrays"):
        load(tmp_path / "x.npy", image=True, layout="NHW")
    with pytest.raises(ValueError, match="layout must be one of NCHW, NHWC, NHW; got 'CHW'"):
        image_layout((5, 4, 4), "CHW", "x")


def test_levels_of_integer_and_float_arrays(tmp_path):
    digits = RNG.integers(0, 17, (30, 1, 8, 8)).astype(np.int64)
    digits[0, 0, 0, 0] = 16
    np.save(tmp_path / "d.npy", digits)
    ds = load(tmp_path / "d.npy", image=True)
    assert ds.levels == 17 and "17 levels (its largest value + 1" in ds.description
    assert load(tmp_path / "d.npy", image=True, levels=32).levels == 32
    assert load(tmp_path / "d.npy", levels=17).event_shape == (64,)  # levels without image: flat
    with pytest.raises(
        ValueError, match=r"pixel values must lie in 0\.\.9 \(10 levels\), got 0\.\.16"
    ):
        load(tmp_path / "d.npy", image=True, levels=10)
    np.save(tmp_path / "neg.npy", digits - 1)
    with pytest.raises(ValueError, match=r"must lie in 0\.\.15 .*got -1\.\.15"):
        load(tmp_path / "neg.npy", image=True)
    np.save(tmp_path / "wide.npy", digits * 100)
    with pytest.raises(ValueError, match="pixel values reach 1600, but at most 256 levels"):
        load(tmp_path / "wide.npy", image=True)
    np.save(tmp_path / "b.npy", digits > 8)
    assert load(tmp_path / "b.npy", image=True).levels == 2

    np.save(tmp_path / "f.npy", digits.astype(np.float32))
    whole = load(tmp_path / "f.npy", image=True, levels=17)
    torch.testing.assert_close(whole.quantized("test"), ds.quantized("test"), rtol=0, atol=0)
    torch.testing.assert_close(whole.test, ds.test, rtol=0, atol=0)  # same seed, same noise
    np.save(tmp_path / "half.npy", digits / 2.0 + 0.25)
    with pytest.raises(ValueError, match=r"reads the values as integers 0\.\.16, but index"):
        load(tmp_path / "half.npy", image=True, levels=17)
    # float images without levels stay continuous, as before
    continuous = load(tmp_path / "half.npy", image=True)
    assert continuous.levels is None and continuous.dequantization is None
    assert float(continuous.train.max()) > 1


def test_npz_images_with_labels(tmp_path):
    x = RNG.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
    y = np.array(["a", "b"] * 10)
    np.savez(tmp_path / "set.npz", images=x, y=y)
    ds = load(tmp_path / "set.npz", image=True, label="y")
    assert ds.event_shape == (3, 6, 6) and ds.label_names == ("a", "b")
    assert sum(len(v) for v in ds.labels.values()) == 20
    with pytest.raises(ValueError, match=r"holds 2 arrays"):
        load(tmp_path / "set.npz", image=True)
    assert load(tmp_path / "set.npz", image=True, key="images").labels is None


def test_vector_and_csv_files_are_unchanged(tmp_path):
    ints = RNG.integers(0, 10, (30, 3))
    np.save(tmp_path / "v.npy", ints)
    ds = load(tmp_path / "v.npy")
    assert ds.levels is None and ds.dequantization is None and ds.image_shape is None
    torch.testing.assert_close(
        torch.cat([ds.train, ds.val, ds.test]).sort(0).values,
        torch.from_numpy(ints).float().sort(0).values,
    )
    np.save(tmp_path / "img.npy", RNG.integers(0, 256, (10, 4, 4, 1), dtype=np.uint8))
    flat = load(tmp_path / "img.npy")  # 4-D without image=True: flattened as stored, as before
    assert flat.event_shape == (16,) and flat.levels is None and float(flat.train.max()) > 1
    (tmp_path / "p.csv").write_text("a,b\n" + "\n".join(f"{i},{i}" for i in range(10)))
    with pytest.raises(ValueError, match=r"levels=4 applies to images .* is a \.csv file"):
        load(tmp_path / "p.csv", levels=4)
    with pytest.raises(ValueError, match=r"image=True needs \(N, C, H, W\) images"):
        load(tmp_path / "p.csv", image=True)
    with pytest.raises(ValueError, match="levels=17 does not apply to the built-in dataset"):
        load("digits", levels=17)


def test_dataset_checks_levels():
    x = torch.rand(4, 1, 2, 2)
    assert Dataset("d", x, x, x, event_shape=(1, 2, 2), levels=4).dequantization == "uniform"
    with pytest.raises(ValueError, match=r"train must lie in \[0, 1\) for data dequantised"):
        Dataset("d", x * 4, x, x, event_shape=(1, 2, 2), levels=4)
    with pytest.raises(ValueError, match="dequantization='uniform' describes discrete data"):
        Dataset("d", x, x, x, event_shape=(1, 2, 2), dequantization="uniform")
    with pytest.raises(ValueError, match="dequantization must be one of uniform"):
        Dataset("d", x, x, x, event_shape=(1, 2, 2), levels=4, dequantization="flow++")
    with pytest.raises(ValueError, match="has no levels"):
        Dataset("d", x, x, x, event_shape=(1, 2, 2)).quantized()
    digits = load("digits")
    assert digits.dequantization == "uniform"
    torch.testing.assert_close(
        ff.data.dequantize(digits.quantized(), 17, torch.Generator().manual_seed(0)),
        digits.train,
        rtol=0,
        atol=0,
    )  # the levels are exact: re-dequantising with the same seed gives the same data back


# -- bits per dimension ---------------------------------------------------------------------------
class UniformCube(Model):
    """The uniform density on the box ``[low, low + width)`` of an event shape."""

    def __init__(self, event_shape, low=0.0, width=1.0):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.context_dim = 0
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float64))
        self.register_buffer("width", torch.as_tensor(width, dtype=torch.float64))

    def _log_prob(self, x, context):
        inside = ((x >= self.low) & (x < self.low + self.width)).flatten(1).all(1)
        density = -torch.log(self.width.expand(self.event_shape)).sum()
        return torch.where(inside, density, -math.inf).to(x.dtype)

    def _encode(self, x, context):
        return x

    def _decode(self, z, context):
        return z

    def _base_sample(self, n):
        return torch.rand(n, *self.event_shape)


def test_a_uniform_model_on_image_levels_gives_log2_levels(tmp_path):
    np.save(tmp_path / "x.npy", RNG.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8))
    ds = load(tmp_path / "x.npy", image=True)
    result = nll(UniformCube(ds.event_shape), ds.test.double())
    assert result.mean == 0.0
    assert bits_per_dim(result.mean, ds.event_shape, levels=ds.levels) == 8.0
    assert bits_per_dim(result.mean, ds.dim, levels=ds.levels) == 8.0
    digits = load("digits", image=True)
    uniform = nll(UniformCube(digits.event_shape), digits.test.double()).mean
    assert bits_per_dim(uniform, digits.event_shape, levels=17) == pytest.approx(math.log2(17))


def test_bits_per_dim_of_a_standardised_model(tmp_path):
    # A uniform model of y = (x - m) / s has density prod(s) on the standardised cube: its NLL is
    # -sum(log s), and scale=s turns it back into log2(L) exactly, as Standardize's log_prob does.
    digits = load("digits", image=True)
    mean, std = (s.double() for s in ff.data.fit_standardization(digits.train))
    y = (digits.test.double() - mean) / std
    inner = UniformCube(digits.event_shape, low=-mean / std, width=1 / std)
    nll_y = nll(inner, y).mean
    assert nll_y == pytest.approx(float(torch.log(std.double()).sum() * -1), rel=1e-12)
    assert bits_per_dim(nll_y, (1, 8, 8), levels=17, scale=std) == pytest.approx(
        math.log2(17), abs=1e-12
    )
    wrapped = Standardize(inner, mean, std)
    nll_x = nll(wrapped, digits.test.double()).mean
    assert bits_per_dim(nll_x, (1, 8, 8), levels=17) == pytest.approx(math.log2(17), abs=1e-12)
    # a number is the same scale in every dimension, a (C, 1, 1) tensor one per channel
    assert bits_per_dim(-64 * math.log(2.0), 64, levels=4, scale=2.0) == pytest.approx(2.0)
    per_channel = torch.tensor([2.0, 4.0, 8.0]).reshape(3, 1, 1)
    nll_c = -16 * math.log(2.0 * 4.0 * 8.0)
    assert bits_per_dim(nll_c, (3, 4, 4), levels=256, scale=per_channel) == pytest.approx(8.0)


def test_bits_per_dim_checks_shapes_and_scales():
    with pytest.raises(ValueError, match="dim must be an int >= 1 or an event shape"):
        bits_per_dim(1.0, (3, 0, 4))
    with pytest.raises(ValueError, match=r"non-empty event shape, got \(\)"):
        bits_per_dim(1.0, ())
    with pytest.raises(ValueError, match=r"scale must be a positive number, got -1\.0"):
        bits_per_dim(1.0, 4, scale=-1.0)
    with pytest.raises(ValueError, match=r"broadcasts to the event shape \(3, 4, 4\)"):
        bits_per_dim(1.0, (3, 4, 4), scale=torch.ones(2))
    with pytest.raises(ValueError, match="positive and finite everywhere"):
        bits_per_dim(1.0, (2,), scale=torch.tensor([1.0, 0.0]))


def test_the_command_line_trains_on_an_image_folder(tmp_path, capsys):
    from flowforge.cli import main

    image_folder(tmp_path / "pets", per_class=10)  # 20 images: 2 validate
    out = tmp_path / "run"
    argv = ["train", "--model", "maf", "--data", str(tmp_path / "pets"), "--steps", "2"]
    flags = ["--data-option", "image=false", "-o", "layers=1", "--no-progress", "--out", str(out)]
    assert main([*argv, *flags]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["event_shape"] == [16] and config["data"]["source"] == str(tmp_path / "pets")
    capsys.readouterr()
    bad = ["--data-option", "layout=NHWC", "--no-progress", "--out", str(tmp_path / "r2")]
    assert main([*argv, *bad]) == 2
    assert "layout='NHWC' applies to image arrays" in capsys.readouterr().err
