"""Plots: every function draws a non-blank figure, writes it atomically, and leaves pyplot alone."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from flowforge.data import checkerboard, checkerboard_log_prob
from flowforge.viz import (
    plot_comparison,
    plot_density,
    plot_images,
    plot_samples,
    plot_samples_by_label,
    plot_training_curves,
    save_figure,
)
from flowforge.viz.density import CHUNK

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def points(n: int = 400, d: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def records() -> list[dict]:
    out = [{"step": s, "loss": 4.0 - s / 1000, "lr": 1e-3} for s in range(0, 500, 10)]
    return out + [{"step": s, "val_nll": 4.1 - s / 1000} for s in range(0, 501, 100)]


# One builder per public plot and per kind of input: every check below runs on all of them.
BUILDERS = {
    "samples-2d": lambda: plot_samples(points(), points(seed=1), title="2-D"),
    "samples-2d-alone": lambda: plot_samples(points().numpy()),
    "samples-5d": lambda: plot_samples(points(d=5), points(d=5, seed=1)),
    "samples-1d": lambda: plot_samples(points(d=1), points(d=1, seed=1)),
    "samples-images": lambda: plot_samples(torch.rand(20, 1, 8, 8), torch.rand(30, 1, 8, 8)),
    "density": lambda: plot_density(checkerboard_log_prob, resolution=40, data=checkerboard(500)),
    "density-log": lambda: plot_density(lambda x: -0.5 * (x**2).sum(1), resolution=40, log=True),
    "images-grey": lambda: plot_images(torch.rand(10, 64), image_shape=(1, 8, 8), title="grey"),
    "images-rgb": lambda: plot_images(np.random.default_rng(0).random((6, 3, 8, 8))),
    "curves": lambda: plot_training_curves(records(), title="run"),
    "comparison-2d": lambda: plot_comparison({"a": points(), "b": points(seed=2)}, points(seed=1)),
    "comparison-5d": lambda: plot_comparison({"a": points(d=5), "b": points(d=5, seed=2)}),
    "comparison-images": lambda: plot_comparison(
        {"a": torch.rand(5, 3, 6, 6)}, torch.rand(5, 3, 6, 6)
    ),
    "by-label-2d": lambda: plot_samples_by_label(
        {"a": points(), "b": points(seed=2)},
        torch.arange(400) % 4,
        data=points(seed=1),
        data_labels=torch.arange(400) % 4,
    ),
    "by-label-1d": lambda: plot_samples_by_label(points(d=1), torch.arange(400) % 3),
    "by-label-images": lambda: plot_samples_by_label(
        {"a": torch.rand(30, 64)}, torch.arange(30) % 10, image_shape=(1, 8, 8)
    ),
}


def assert_png_not_blank(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].var() > 1e-4  # something beyond the white background was drawn


@pytest.mark.parametrize("name", BUILDERS)
def test_every_plot_writes_a_non_blank_png(name, tmp_path):
    fig = BUILDERS[name]()
    assert isinstance(fig, Figure)
    path = save_figure(fig, tmp_path / f"{name}.png", dpi=60)  # low resolution: fast
    assert path == tmp_path / f"{name}.png"
    assert_png_not_blank(path)


def test_plots_leave_pyplot_alone():
    backend = matplotlib.get_backend()
    for build in BUILDERS.values():
        build()
    assert plt.get_fignums() == []
    assert matplotlib.get_backend() == backend


def test_importing_and_plotting_never_imports_pyplot(tmp_path):
    # pyplot picks a backend and keeps a registry of figures: a library must not set that up.
    code = (
        "import sys, torch; from flowforge import viz; "
        "viz.save_figure(viz.plot_samples(torch.randn(50, 2)), sys.argv[1]); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a.png")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG_MAGIC


# -- save_figure -------------------------------------------------------------------------------


def test_save_figure_formats_from_the_suffix(tmp_path):
    fig = plot_samples(points())
    assert save_figure(fig, tmp_path / "a.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in save_figure(fig, tmp_path / "a.SVG").read_bytes()[:1000]


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_save_figure_is_reproducible(suffix, tmp_path):
    # No time stamps or random ids: the same plot gives the same bytes, run after run.
    a = save_figure(plot_samples(points(50)), tmp_path / f"a{suffix}").read_bytes()
    b = save_figure(plot_samples(points(50)), tmp_path / f"b{suffix}").read_bytes()
    assert a == b
    assert matplotlib.rcParams["svg.hashsalt"] is None


def test_save_figure_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "er" / "fig.png"  # missing parents are created
    save_figure(plot_samples(points()), target)
    small = target.read_bytes()
    save_figure(plot_samples(points(5000)), str(target), dpi=60)
    assert target.read_bytes() != small
    assert_png_not_blank(target)
    assert os.listdir(target.parent) == ["fig.png"]


def test_save_figure_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    fig = plot_samples(points())

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["fig.png"]


def test_save_figure_errors(tmp_path):
    fig = plot_samples(points())
    with pytest.raises(ValueError, match=r"\.png, \.pdf or \.svg.*fig\.jpg"):
        save_figure(fig, tmp_path / "fig.jpg")
    with pytest.raises(ValueError, match="dpi"):
        save_figure(fig, tmp_path / "fig.png", dpi=0)
    with pytest.raises(TypeError, match=r"fig must be a matplotlib\.figure\.Figure"):
        save_figure("not a figure", tmp_path / "fig.png")
    assert list(tmp_path.iterdir()) == []


# -- plot_samples ------------------------------------------------------------------------------


def test_samples_2d_panels_share_limits_and_aspect():
    fig = plot_samples(points(), points(seed=1) * 2, bounds=np.array([-3, 3, -2, 2]))
    assert [ax.get_title() for ax in fig.axes] == ["samples", "data"]
    for ax in fig.axes:
        assert ax.get_xlim() == (-3, 3) and ax.get_ylim() == (-2, 2)
        assert ax.get_aspect() == 1.0
    # One colour scale, the data's, so the colours of the two panels mean the same.
    (a,), (b,) = fig.axes[0].images, fig.axes[1].images
    assert a.get_clim() == b.get_clim() and b.get_clim()[1] == pytest.approx(b.get_array().max())


def test_samples_default_bounds_follow_the_data():
    data = checkerboard(2000)
    fig = plot_samples(data * 10, data)
    x0, x1 = fig.axes[0].get_xlim()
    assert -4.6 < x0 < -4 and 4 < x1 < 4.6


def test_samples_high_dimensional_draw_a_corner_plot():
    fig = plot_samples(points(d=10), points(d=10, seed=1) + 5)
    # The first 4 coordinates: 4 histograms on the diagonal, 6 pairwise panels below it.
    assert len(fig.axes) == 10
    diagonal = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in diagonal] == [f"$x_{{{j}}}$" for j in range(1, 5)]
    assert [t.get_text() for t in fig.texts] == ["the first 4 of 10 coordinates"]
    pair = fig.axes[1]  # row x2, column x1
    assert (pair.get_xlabel(), pair.get_ylabel()) == ("$x_{1}$", "$x_{2}$")
    data, samples = pair.collections  # the data beneath, the samples on top
    assert data.get_offsets()[:, 0].mean() > 4 and abs(samples.get_offsets()[:, 0].mean()) < 1
    # The axes follow the data, so samples far from it fall outside.
    assert pair.get_xlim()[0] > 1
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["data", "samples"]


def test_samples_images_flat_and_shaped():
    fig = plot_samples(torch.rand(100, 64), torch.rand(100, 64), image_shape=(1, 8, 8))
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (8 * 9 + 1, 8 * 9 + 1)  # the first 64 images, 8 × 8 with 1-pixel gaps
    assert not fig.axes[0].axison


def test_samples_drop_non_finite_rows_and_say_so():
    x = points(100)
    x[:3, 0] = float("nan")
    x[3, 1] = float("inf")
    fig = plot_samples(x, points())
    assert "4 of 100 rows NaN/inf, dropped" in fig.axes[0].get_title()
    assert fig.axes[1].get_title() == "data"
    # A model that diverged completely still gets a figure.
    fig = plot_samples(torch.full((10, 2), float("nan")), points())
    assert "10 of 10 rows" in fig.axes[0].get_title()
    fig = plot_samples(torch.full((10, 1), float("nan")))
    assert "10 of 10 rows" in fig.axes[0].get_title()


def test_samples_subsampling_is_reproducible_and_leaves_torch_rng_alone():
    x = points(3000, d=3)
    state = torch.random.get_rng_state()
    a = plot_samples(x, max_points=500).axes[1].collections[0].get_offsets()
    b = plot_samples(x, max_points=500).axes[1].collections[0].get_offsets()
    assert torch.equal(state, torch.random.get_rng_state())
    assert a.shape == (500, 2)
    np.testing.assert_array_equal(a, b)


def test_samples_accept_gradients_and_other_dtypes():
    x = points().requires_grad_()
    plot_samples(x * 2, x.detach().to(torch.bfloat16))
    plot_samples(np.arange(20, dtype=np.int64).reshape(10, 2))


@pytest.mark.parametrize(
    ("samples", "data", "kwargs", "error", "match"),
    [
        (torch.randn(5), None, {}, ValueError, r"samples must have shape .*got \(5,\)"),
        (torch.randn(5, 8, 8), None, {}, ValueError, r"samples\[:, None\]"),
        (torch.randn(0, 2), None, {}, ValueError, r"at least one .*\(0, 2\)"),
        (torch.randn(5, 2), torch.randn(5, 3), {}, ValueError, r"samples and data .*\(N, 3\)"),
        (torch.randn(5, 2), torch.rand(5, 1, 2, 2), {}, ValueError, "same kind"),
        (torch.randn(5, 2, 4, 4), None, {}, ValueError, r"1 \(grey\) or 3 \(RGB\)"),
        (torch.randn(5, 10), None, {"image_shape": (1, 3, 3)}, ValueError, "holds 9 values"),
        (torch.randn(5, 9), None, {"image_shape": (2, 3, 3)}, ValueError, "C = 1"),
        (torch.rand(5, 1, 3, 3), None, {"image_shape": (1, 9, 1)}, ValueError, "only for flat"),
        (torch.randn(5, 2), None, {"bounds": (1, 0, 0, 1)}, ValueError, "xmin < xmax"),
        (torch.randn(5, 2), None, {"bounds": (0, 1)}, ValueError, r"bounds must be \(xmin"),
        (torch.randn(5, 2), None, {"bounds": "abcd"}, ValueError, "four numbers"),
        (torch.randn(5, 2), None, {"max_points": 0}, ValueError, "max_points"),
        ([[0.0, 1.0]], None, {}, TypeError, "samples must be a torch.Tensor or numpy.ndarray"),
        (torch.ones(5, 2, dtype=torch.bool), None, {}, TypeError, "real numbers"),
    ],
)
def test_samples_errors(samples, data, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_samples(samples, data, **kwargs)


# -- plot_density ------------------------------------------------------------------------------


def test_density_grid_orientation_and_values():
    # log p = x1 + 2 x2 (unnormalised): the image must grow to the right (x) and upwards (y).
    fig = plot_density(lambda x: x[:, 0] + 2 * x[:, 1], bounds=(0, 1, 0, 1), resolution=10)
    image = fig.axes[0].images[0]
    values = image.get_array()
    assert values.shape == (10, 10)
    assert image.origin == "lower" and list(image.get_extent()) == [0, 1, 0, 1]
    assert values[0, 0] == pytest.approx(math.exp(0.05 + 2 * 0.05))  # the first cell's centre
    assert np.all(np.diff(values, axis=1) > 0) and np.all(np.diff(values, axis=0) > 0)
    assert fig.axes[0].get_aspect() == 1.0


def test_density_handles_minus_infinity_and_shares_the_scale_with_data():
    fig = plot_density(checkerboard_log_prob, resolution=8, data=checkerboard(1000))
    values = fig.axes[0].images[0].get_array()
    # Cells of side 1 over [-4, 4]: the bottom-left cell (square [-4, -2]²) is on the support.
    assert values[0, 0] == pytest.approx(1 / 32) and values[0, 2] == 0
    assert values.mask.sum() == 0  # -inf is a density of 0, not a missing value
    assert fig.axes[0].images[0].get_clim() == fig.axes[1].images[0].get_clim()
    assert fig.axes[0].get_title() == "model density" and fig.axes[1].get_title() == "data"
    log = plot_density(checkerboard_log_prob, resolution=8, log=True).axes[0].images[0]
    lo, hi = log.get_clim()
    assert hi == pytest.approx(-math.log(32)) and log.get_array().min() == lo


def test_density_evaluates_in_chunks_without_grad():
    calls = []

    def log_prob(x):
        assert not torch.is_grad_enabled()
        assert x.dtype == torch.float64 and x.shape[1] == 2
        calls.append(x.shape[0])
        return -(x**2).sum(1)

    plot_density(log_prob, resolution=150, dtype=torch.float64)
    assert sum(calls) == 150 * 150 and max(calls) <= CHUNK and len(calls) > 1


def test_density_marks_nan_values():
    fig = plot_density(lambda x: torch.where(x[:, 0] > 0, float("nan"), 0.0), resolution=10)
    assert "50 of 100 grid points NaN/+inf" in fig.axes[0].get_title()
    assert fig.axes[0].images[0].get_array().mask.sum() == 50
    # A density that is zero everywhere still plots.
    fig = plot_density(lambda x: torch.full((x.shape[0],), -math.inf), resolution=4)
    assert "-inf everywhere" in fig.axes[0].get_title()


def test_density_errors():
    with pytest.raises(TypeError, match="log_prob_fn must be callable"):
        plot_density("model")
    with pytest.raises(ValueError, match=r"must return shape \(100,\).*got \(100, 1\)"):
        plot_density(lambda x: x[:, :1], resolution=10)
    with pytest.raises(TypeError, match="must return a tensor"):
        plot_density(lambda x: [0.0] * len(x), resolution=10)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\), got \(7, 3\)"):
        plot_density(checkerboard_log_prob, data=torch.randn(7, 3))
    with pytest.raises(ValueError, match="resolution"):
        plot_density(checkerboard_log_prob, resolution=1)
    with pytest.raises(ValueError, match="bounds"):
        plot_density(checkerboard_log_prob, bounds=(0, 1, 0, math.inf))


# -- plot_images -------------------------------------------------------------------------------


def test_images_grid_layout_clipping_and_colour():
    grey = plot_images(torch.linspace(-1, 2, 10 * 16).reshape(10, 1, 4, 4), nrow=5)
    grid = grey.axes[0].images[0].get_array()
    assert grid.shape == (2 * 5 + 1, 5 * 5 + 1)  # 2 rows of 5, 1-pixel gaps
    assert grid.min() == 0 and grid.max() == 1  # clipped to [0, 1]
    assert not grey.axes[0].axison
    rgb = plot_images(torch.rand(4, 3, 4, 4)).axes[0].images[0].get_array()
    assert rgb.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    eight_bit = plot_images(np.full((1, 1, 2, 2), 51, dtype=np.uint8)).axes[0].images[0]
    assert eight_bit.get_array()[1, 1] == pytest.approx(0.2)  # uint8 is read as 0..255


def test_images_drop_non_finite():
    x = torch.rand(6, 1, 4, 4)
    x[2, 0, 1, 1] = float("nan")
    fig = plot_images(x, title="model")
    assert fig.get_suptitle() == "model\n1 of 6 images NaN/inf, left out"
    plot_images(torch.full((2, 1, 4, 4), float("nan")))


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        (torch.rand(4, 64), {}, r"image_shape=\(C, H, W\)"),
        (torch.rand(4, 8, 8), {}, r"images\[:, None\]"),
        (torch.rand(4, 4, 8, 8), {}, r"1 \(grey\) or 3 \(RGB\).*\(4, 4, 8, 8\)"),
        (torch.rand(4, 64), {"image_shape": (1, 8, 7)}, "holds 56 values"),
        (torch.rand(4, 64), {"image_shape": (8, 8)}, r"image_shape must be \(C, H, W\)"),
        (torch.rand(0, 1, 8, 8), {}, "at least one"),
        (torch.rand(4, 1, 8, 8), {"nrow": 0}, "nrow"),
    ],
)
def test_images_errors(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_images(images, **kwargs)


# -- plot_training_curves ----------------------------------------------------------------------


def test_curves_from_records_one_panel_per_key():
    fig = plot_training_curves(records(), keys=("loss", "val_nll", "missing"))
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "val_nll"]
    steps, values = fig.axes[1].lines[0].get_data()
    assert list(steps) == [0, 100, 200, 300, 400, 500]
    assert values[0] == pytest.approx(4.1)
    assert fig.axes[-1].get_xlabel() == "step"
    assert [ax.get_ylabel() for ax in plot_training_curves(records(), keys="lr").axes] == ["lr"]


def test_curves_from_a_metrics_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps(r) for r in records()]
    lines.insert(3, "")  # blank lines are skipped
    # A run still writing may leave a partial last line: it is ignored.
    path.write_text("\n".join(lines) + '\n{"step": 510, "lo')
    fig = plot_training_curves(path)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines[0].get_xdata()) == 50
    plot_training_curves(str(path))


def test_curves_resumed_steps_keep_the_last_value_and_nan_is_counted():
    recs = [{"step": s, "loss": float(s)} for s in range(5)]
    recs += [{"step": 3, "loss": 30.0}, {"step": 5, "loss": math.nan}, {"loss": 1.0}]
    fig = plot_training_curves(recs, keys=["loss"])
    steps, values = fig.axes[0].lines[0].get_data()
    assert list(steps) == [0, 1, 2, 3, 4] and list(values) == [0, 1, 2, 30, 4]
    assert "1 of 6 values NaN/inf" in fig.axes[0].get_title(loc="left")


def test_curves_errors(tmp_path):
    with pytest.raises(ValueError, match=r"nothing to plot.*\['lr', 'nll'\]"):
        plot_training_curves([{"step": 1, "nll": 2.0, "lr": 0.1}])
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_training_curves([{"loss": 2.0}])  # no step
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_training_curves([])
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1, "loss": 2}\nnot json\n{"step": 2, "loss": 1}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2 is not valid JSON"):
        plot_training_curves(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:1 must be a JSON object"):
        plot_training_curves(bad)
    with pytest.raises(FileNotFoundError):
        plot_training_curves(tmp_path / "missing.jsonl")
    with pytest.raises(TypeError, match="records must be a list of dicts"):
        plot_training_curves({"step": 1, "loss": 2.0})
    with pytest.raises(TypeError, match=r"records\[1\] must be a dict"):
        plot_training_curves([{"step": 1, "loss": 2.0}, 3])
    with pytest.raises(TypeError, match="keys"):
        plot_training_curves(records(), keys=())


# -- plot_comparison ---------------------------------------------------------------------------


def test_comparison_panels_data_first_shared_axes():
    models = {"nsf": points(), "maf": points(seed=2) * 3, "dead": torch.full((8, 2), math.nan)}
    fig = plot_comparison(models, points(seed=1), title="compare")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["data", "nsf", "maf"] and "8 of 8 rows" in titles[3]
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in fig.axes}
    assert len(limits) == 1
    clims = {ax.images[0].get_clim() for ax in fig.axes[:3]}
    assert len(clims) == 1  # one colour scale
    assert len(fig.axes[3].images) == 0  # nothing drawn for a model without finite samples


def test_comparison_without_data_covers_every_model():
    fig = plot_comparison({"a": points(), "b": points(seed=2) + 10})
    x0, x1 = fig.axes[0].get_xlim()
    assert x0 < -2 and x1 > 11


def test_comparison_kinds():
    fig = plot_comparison({f"m{i}": torch.rand(30, 1, 8, 8) for i in range(5)})
    assert len(fig.axes) == 5
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (4 * 9 + 1, 4 * 9 + 1)  # 16 images a model
    fig = plot_comparison({"a": points(d=1)}, points(d=1, seed=1))
    assert [ax.get_title() for ax in fig.axes] == ["data", "a"]


def test_comparison_errors():
    with pytest.raises(ValueError, match="at least one model"):
        plot_comparison({})
    with pytest.raises(TypeError, match="mapping"):
        plot_comparison([points()])
    with pytest.raises(TypeError, match="str names"):
        plot_comparison({1: points()})
    with pytest.raises(ValueError, match=r"samples_by_model\['b'\] as points of shape \(N, 3\)"):
        plot_comparison({"a": points(), "b": points(d=3)})
    with pytest.raises(ValueError, match=r"data and samples_by_model\['a'\]"):
        plot_comparison({"a": points(d=3)}, points())
    with pytest.raises(ValueError, match=r"samples_by_model\['a'\] must have shape"):
        plot_comparison({"a": torch.randn(4)})


# -- comparisons of many models ----------------------------------------------------------------


def test_style_map_gives_twelve_and_more_models_distinct_styles():
    from flowforge.viz import style_map

    names = [f"m{i}" for i in range(25)]
    styles = style_map(names)
    assert len({(s.color, s.linestyle) for s in styles.values()}) == 25
    # Beyond ten colours a colour repeats only with another line style and marker.
    assert styles["m0"].color == styles["m10"].color
    assert styles["m0"].linestyle != styles["m10"].linestyle
    assert styles["m0"].marker != styles["m10"].marker
    # The order fixes the style, whichever subset is drawn.
    assert style_map(["m3"], order=names)["m3"] == styles["m3"]
    assert style_map(["new"], order=["a", "b"])["new"] == style_map(["a", "b", "new"])["new"]
    with pytest.raises(TypeError, match="strings"):
        style_map([1])


def many_records(names):
    out = {}
    for k, name in enumerate(names):
        loss = [
            {"step": s, "loss": 3 - s / 1000 + k, "time_s": s / 100} for s in range(50, 501, 50)
        ]
        val = [{"step": s, "val_nll": 4 - s / 1000 + k / 10} for s in (25, 250, 500)]
        out[name] = loss + val
    return out


def test_curves_of_many_models_one_style_each_losses_apart_legend_outside():
    from flowforge.viz import plot_model_curves, style_map

    names = [f"m{i}" for i in range(12)]
    styles = style_map(names)
    labels = {n: "NLL" if i < 8 else "regression" for i, n in enumerate(names)}
    fig = plot_model_curves(many_records(names), styles=styles, loss_labels=labels)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["validation NLL (data units)", "NLL", "regression"]
    val, nll, reg = fig.axes
    assert len(val.lines) == 12 and len(nll.lines) == 8 and len(reg.lines) == 4
    drawn = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in val.lines}
    assert len(drawn) == 12  # twelve distinct styles
    for line, name in zip(val.lines, names, strict=True):
        assert line.get_color() == styles[name].color
    assert reg.lines[0].get_color() == styles["m8"].color  # the same style in every panel
    assert val.get_xlabel() == "training time (s)"  # every model has times
    # Validation records between log lines get interpolated times: step 250 -> 2.5 s.
    assert 2.5 in val.lines[0].get_xdata()
    # The one legend lies below the axes, covering none of them.
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent())
    assert [t.get_text() for t in legend.get_texts()] == names


def test_density_grid_shares_one_scale_beside_the_true_density():
    from flowforge.viz import plot_density_grid

    box = (-4.5, 4.5, -4.5, 4.5)
    models = {
        "wide": lambda x: -0.5 * (x**2).sum(1) / 4 - math.log(8 * math.pi),
        "spiky": lambda x: -0.5 * (x**2).sum(1) * 25 + math.log(25 / (2 * math.pi)),
        "broken": lambda x: torch.full((x.shape[0],), math.nan),
    }
    fig = plot_density_grid(
        models, bounds=box, resolution=30, reference=checkerboard_log_prob, colors={"wide": "red"}
    )
    panels = [ax for ax in fig.axes if ax.images]
    titles = [ax.get_title() for ax in panels]
    assert titles[0] == "true density" and titles[1:3] == ["wide", "spiky"]
    assert "900 points NaN/+inf" in titles[3]
    clims = {ax.images[0].get_clim() for ax in panels}
    assert len(clims) == 1  # one colour scale ...
    assert clims.pop() == pytest.approx((0.0, 1 / 32))  # ... the true density's peak
    assert panels[2].images[0].get_array().max() == pytest.approx(1 / 32)  # saturated
    assert panels[1].title.get_color() == "red"
    # Without an exact density the data's histogram is the reference.
    fig = plot_density_grid(models, bounds=box, resolution=30, data=checkerboard(2000))
    assert fig.axes[0].get_title() == "data (histogram)"
    with pytest.raises(ValueError, match=r"\(30, 30\) grid"):
        plot_density_grid({"a": np.zeros((3, 3))}, bounds=box, resolution=30)
    with pytest.raises(ValueError, match="at least one"):
        plot_density_grid({}, bounds=box)


def test_pairs_view_of_four_dimensional_data_with_column_names():
    from flowforge.viz import plot_pairs

    data = points(500, d=4)
    samples = {"a": points(300, d=4, seed=2), "b": points(300, d=4, seed=3) * 2}
    columns = ["age", "height", "weight", "income"]
    fig = plot_pairs(samples, data, columns=columns, colors={"a": "#ff0000"})
    assert len(fig.axes) == 2 * 6  # two models, six pairs of four coordinates
    pairs = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes[:6]]
    assert pairs[0] == ("age", "height") and pairs[-1] == ("weight", "income")
    first = fig.axes[0]
    assert len(first.collections) == 2  # data beneath, samples on top
    assert first.collections[1].get_facecolor()[0][:3] == pytest.approx((1.0, 0.0, 0.0))
    assert first.get_title(loc="left") == "a"
    # Shared axes down a column: the data's range, whatever the model's.
    assert fig.axes[0].get_xlim() == fig.axes[6].get_xlim()
    fig = plot_pairs({"a": points(50, d=7)}, points(50, d=7), max_dims=5)
    assert len(fig.axes) == 10 and "first 5 of 7" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match=r"samples_by_model\['a'\] must have shape \(N, 4\)"):
        plot_pairs({"a": points(d=3)}, data)
    with pytest.raises(ValueError, match="4 coordinates, got 2 names"):
        plot_pairs(samples, data, columns=["a", "b"])


def test_plots_label_axes_with_column_names():
    fig = plot_samples(points(d=3), points(d=3, seed=1), columns=["a", "b", "c"])
    assert (fig.axes[1].get_xlabel(), fig.axes[1].get_ylabel()) == ("a", "b")
    assert (fig.axes[4].get_xlabel(), fig.axes[4].get_ylabel()) == ("b", "c")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["a", "b", "c"]
    fig = plot_comparison({"m": points()}, points(seed=1), columns=["u", "v"], colors={"m": "red"})
    assert fig.axes[1].get_xlabel() == "u" and fig.axes[1].title.get_color() == "red"
    assert fig.axes[0].get_xlabel() == "u"


# -- samples by label --------------------------------------------------------------------------


def labelled_points(k: int = 4, per: int = 100, seed: int = 0):
    y = torch.arange(k).repeat_interleave(per)
    return points(k * per, seed=seed) + 4 * torch.stack([y % 2, y // 2], 1).double(), y


def test_by_label_colours_each_class_the_same_in_every_panel_key_outside():
    from matplotlib.colors import to_hex

    from flowforge.viz import class_colors

    x, y = labelled_points()
    fig = plot_samples_by_label(
        {"a": x, "b": x[:200]},
        {"a": y, "b": y[:200]},
        data=x,
        data_labels=y,
        label_names=list("pqrs"),
    )
    assert [ax.get_title() for ax in fig.axes] == ["data", "a", "b"]
    palette = class_colors(4)
    for ax in fig.axes:
        (dots,) = ax.collections
        offsets = torch.as_tensor(np.asarray(dots.get_offsets()))
        drawn = [to_hex(c) for c in dots.get_facecolors()]
        # Each point keeps its class's colour (the points are drawn in a shuffled order).
        rows = torch.cdist(offsets, x).argmin(dim=1)
        assert drawn == [palette[int(y[r])] for r in rows]
        # Shuffled, not one class after another: the first 40 points hold every class present.
        assert len(set(drawn[:40])) == len(set(drawn))
        assert ax.get_xlim() == fig.axes[0].get_xlim()
    fig.canvas.draw()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list("pqrs")
    box = legend.get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes)


def test_by_label_images_one_row_per_class_named_on_the_left():
    images = torch.rand(25, 1, 8, 8)
    y = torch.tensor([0] * 12 + [2] * 13)  # class 1 has no samples: an all-white row
    fig = plot_samples_by_label({"m": images}, y, num_classes=3, per_row=5)
    (ax,) = fig.axes
    grid = ax.images[0].get_array()
    assert grid.shape == (3 * 9 + 1, 5 * 9 + 1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    first = np.asarray(grid[1:9, 1:9])
    assert np.allclose(first, images[0, 0].numpy())  # row 0 starts with class 0's first sample
    assert (np.asarray(grid[10:18]) == 1).all()  # the empty class: white cells
    assert np.allclose(np.asarray(grid[19:27, 1:9]), images[12, 0].numpy())


def test_by_label_drops_non_finite_rows_with_their_labels():
    x, y = labelled_points()
    x[:7] = float("nan")
    fig = plot_samples_by_label(x, y)
    (ax,) = fig.axes
    assert "7 of 400 rows NaN/inf, dropped" in ax.get_title()
    assert len(ax.collections[0].get_offsets()) == 393


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (torch.zeros(399, dtype=torch.long), {}, ValueError, r"shape \(400,\), one label per row"),
        (torch.zeros(400), {}, TypeError, "integer class labels"),
        (torch.full((400,), -1), {}, ValueError, "class indices >= 0"),
        (torch.full((400,), 5), {"num_classes": 3}, ValueError, r"classes 0..2 \(num_classes=3\)"),
        (torch.zeros(400, dtype=torch.long), {"label_names": ["a", "b"]}, ValueError, "each of"),
        (torch.zeros(400, dtype=torch.long), {"data": points()}, ValueError, "data_labels"),
        ({"other": torch.zeros(400, dtype=torch.long)}, {}, ValueError, "no entry for 'a'"),
    ],
)
def test_by_label_errors(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_samples_by_label({"a": points()}, labels, **kwargs)


def test_by_label_panels_must_be_one_kind():
    with pytest.raises(ValueError, match="same kind"):
        plot_samples_by_label(
            {"a": points(), "b": torch.rand(400, 1, 4, 4)}, torch.zeros(400, dtype=torch.long)
        )


def test_class_colors_distinct_for_many_classes():
    from flowforge.viz import class_colors

    for k in (1, 10, 11, 20, 37):
        colors = class_colors(k)
        assert len(colors) == k == len(set(colors))
