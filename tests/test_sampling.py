"""Sampling in chunks and image samples as PNG files (flowforge.train.sampling, sample --format)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import flowforge as ff
from flowforge.cli import main
from flowforge.train.sampling import chunk_size_for, sample_in_chunks, to_pixels, write_pngs


def test_one_chunk_is_one_call_and_chunks_are_reproducible():
    model = ff.models.create("realnvp", dim=3, layers=2, hidden=(8,)).eval()
    torch.manual_seed(3)
    whole = model.sample(10)
    torch.manual_seed(3)
    assert torch.equal(sample_in_chunks(model, 10, chunk_size=10), whole)
    torch.manual_seed(3)
    first = sample_in_chunks(model, 10, chunk_size=4)
    torch.manual_seed(3)
    again = sample_in_chunks(model, 10, chunk_size=4, progress=True)
    assert first.shape == (10, 3) and torch.equal(first, again)
    # Chunks draw from the generator in turn: the first chunk is the first 4 of a call of 4.
    torch.manual_seed(3)
    assert torch.equal(first[:4], model.sample(4))


def test_chunks_keep_each_sample_with_its_label():
    model = ff.models.create("realnvp", dim=2, layers=2, hidden=(8,), num_classes=3).eval()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    torch.manual_seed(0)
    chunked = sample_in_chunks(model, 7, labels, chunk_size=3)
    torch.manual_seed(0)
    parts = [model.sample(len(c), c) for c in labels.split(3)]
    assert torch.equal(chunked, torch.cat(parts))
    torch.manual_seed(0)
    shared = sample_in_chunks(model, 5, torch.tensor(1), chunk_size=2)  # one label for all
    torch.manual_seed(0)
    assert torch.equal(shared[:2], model.sample(2, torch.tensor(1)))


def test_default_chunks_bound_the_entries():
    assert chunk_size_for((2,)) == 2**21 and chunk_size_for((64,)) == 65_536
    assert chunk_size_for((3, 32, 32)) == 2**22 // 3072
    assert chunk_size_for((3, 4096, 4096)) == 1
    with pytest.raises(ValueError, match="chunk_size must be a positive number"):
        sample_in_chunks(ff.models.create("nice", dim=2), 3, chunk_size=0)


def test_pixels_are_the_levels_scaled_to_8_bits():
    levels = 17
    k = torch.arange(levels, dtype=torch.float64)
    x = ((k + 0.5) / levels).reshape(1, 1, 1, levels)  # one grey image, a row of every level
    got = to_pixels(x, levels)
    assert got.shape == (1, 1, levels) and got.dtype == np.uint8
    assert got[0, 0].tolist() == [round(255 * v / 16) for v in range(levels)]
    # Outside [0, 1) clips to the end levels; RGB keeps its channels last.
    rgb = to_pixels(torch.tensor([-0.3, 0.99, 1.7]).reshape(1, 3, 1, 1), 2)
    assert rgb.shape == (1, 1, 1, 3) and rgb[0, 0, 0].tolist() == [0, 255, 255]
    with pytest.raises(ValueError, match=r"grey \(1, H, W\) or RGB \(3, H, W\)"):
        to_pixels(torch.zeros(1, 2, 4, 4), 17)


def test_png_files_round_trip(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(3, 1, 5, 4)
    paths = write_pngs(x, 17, tmp_path / "out")
    assert [p.name for p in paths] == ["000000.png", "000001.png", "000002.png"]
    for path, pixels in zip(paths, to_pixels(x, 17), strict=True):
        assert np.array_equal(np.array(Image.open(path)), pixels)


def test_sample_format_png_from_an_image_run(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "nice", "--data", "digits", "--data-option", "image=true"]
    assert main([*argv, "--steps", "3", "--no-progress", "--out", str(run)]) == 0
    out = tmp_path / "pngs"
    sample = ["sample", str(run), "-n", "9", "--no-progress"]
    assert main([*sample, "--format", "png", "--out", str(out), "--chunk-size", "4"]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 9 and np.array(Image.open(files[0])).shape == (8, 8)
    capsys.readouterr()
    assert main([*sample, "--format", "png"]) == 2
    assert "give the folder as --out DIR" in capsys.readouterr().err
    assert main([*sample, "--format", "csv", "--out", str(tmp_path / "x.npy")]) == 2
    assert "--format csv needs --out ending with .csv" in capsys.readouterr().err


def test_sample_format_png_refuses_data_that_are_not_images(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "nice", "--data", "moons", "--steps", "2", "--no-progress",
                 "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["sample", str(run), "--format", "png", "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    assert "are not images; write .npy or .csv instead" in capsys.readouterr().err
