"""Dequantisation noise redrawn for every training batch of discrete data (digits, images)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import flowforge as ff
from flowforge.cli import build_parser
from flowforge.cli.options import train_options
from flowforge.train import RunSpec, TrainConfig, resume, start, train
from flowforge.train.loop import batch_noise_generator

LEVELS = 5  # few levels: every value's level is easy to check, and noise is a large share


def quick(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=32, eval_every=3, checkpoint_every=3, progress=False)
    return TrainConfig(**{**base, **kw})


def small_model(seed: int = 0) -> ff.Model:
    torch.manual_seed(seed)
    return ff.models.create("realnvp", dim=3, layers=2, hidden=(8,))


@pytest.fixture(scope="module")
def levels_data():
    g = torch.Generator().manual_seed(3)
    values = torch.randint(LEVELS, (200, 3), generator=g)
    x = ff.data.dequantize(values, LEVELS, g)
    val = ff.data.dequantize(torch.randint(LEVELS, (50, 3), generator=g), LEVELS, g)
    return values, x, val


def recorded_batches(model: ff.Model, monkeypatch) -> list[torch.Tensor]:
    """The data of every batch the loop hands ``model`` (the initialisation batch first)."""
    seen: list[torch.Tensor] = []
    objective = model.objective

    def spy(batch):
        seen.append(batch.x1.detach().clone())
        return objective(batch)

    monkeypatch.setattr(model, "objective", spy)
    return seen


def test_quantize_inverts_dequantize_and_checks_its_input():
    g = torch.Generator().manual_seed(0)
    v = torch.randint(256, (64, 3, 4, 4), generator=g)
    for levels in (2, 17, 256):
        w = v % levels
        q = ff.data.quantize(ff.data.dequantize(w, levels, g), levels)
        assert q.dtype == torch.uint8 and torch.equal(q.long(), w)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\).*got values in \[-1"):
        ff.data.quantize(torch.tensor([[-1.0, 0.5]]), 4)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\)"):
        ff.data.quantize(torch.tensor([[1.0]]), 4)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        ff.data.quantize(torch.tensor([[1, 2]]), 4)
    with pytest.raises(ValueError, match="levels"):
        ff.data.quantize(torch.tensor([[0.5]]), 300)


def test_every_batch_gets_new_noise_on_the_same_levels(levels_data, monkeypatch):
    values, x, _ = levels_data
    model = small_model()
    seen = recorded_batches(model, monkeypatch)
    config = quick()
    train(model, x, config, levels=LEVELS)
    assert len(seen) == 1 + config.steps  # the initialisation batch, then one per step
    for step, batch in enumerate(seen[1:], start=1):
        idx = ff.train.batch_indices(config.seed, step, len(x), config.batch_size)
        assert torch.equal(torch.floor(batch.double() * LEVELS).long(), values[idx])
        assert not torch.equal(batch, x[idx])  # the same levels, not the same values
        assert float(batch.min()) >= 0 and float(batch.max()) < 1
    # The noise is step's own: its generator is a pure function of (seed, step).
    a = torch.rand(4, generator=batch_noise_generator(0, 2))
    assert torch.equal(a, torch.rand(4, generator=batch_noise_generator(0, 2)))
    assert not torch.equal(a, torch.rand(4, generator=batch_noise_generator(0, 3)))
    assert not torch.equal(a, torch.rand(4, generator=batch_noise_generator(1, 2)))


def test_without_levels_or_with_fixed_noise_training_is_unchanged(levels_data, monkeypatch):
    _, x, val = levels_data
    plain, fixed, redrawn = small_model(), small_model(), small_model()
    seen = recorded_batches(plain, monkeypatch)
    train(plain, x, quick(), val_x=val)
    train(fixed, x, quick(dequantization="fixed"), val_x=val, levels=LEVELS)
    train(redrawn, x, quick(), val_x=val, levels=LEVELS)
    for step, batch in enumerate(seen[1:], start=1):  # the loaded values, as always
        assert torch.equal(batch, x[ff.train.batch_indices(0, step, len(x), 32)])
    for k, v in plain.state_dict().items():
        assert torch.equal(v, fixed.state_dict()[k]), k
    assert any(not torch.equal(v, redrawn.state_dict()[k]) for k, v in plain.state_dict().items())
    x_before = x.clone()
    train(small_model(), x, quick(steps=2), levels=LEVELS)
    assert torch.equal(x, x_before)  # the training data are not changed in place


def test_redrawn_noise_resumes_to_the_same_weights(levels_data, tmp_path):
    _, x, val = levels_data
    straight = small_model()
    train(straight, x, quick(), val_x=val, run_dir=tmp_path / "a", levels=LEVELS)
    cut = small_model()
    train(cut, x, quick(), val_x=val, run_dir=tmp_path / "b", levels=LEVELS, stop_at=3)
    resumed = small_model(seed=9)
    train(resumed, x, quick(), val_x=val, run_dir=tmp_path / "b", levels=LEVELS, resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["levels"] == LEVELS
    assert config["dequantization_noise"] == "uniform, redrawn every batch"
    # flowforge train --resume on a run from arrays redraws as the run did.
    again = tmp_path / "c"
    train(small_model(), x, quick(), val_x=val, run_dir=again, levels=LEVELS, stop_at=3)
    resume(again)
    continued, _ = ff.train.load(again, weights="last", ema=False)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, continued.state_dict()[k]), k


def test_redraw_happens_on_the_raw_data_before_standardisation(levels_data, monkeypatch):
    values, x, _ = levels_data
    inner = small_model()
    model = ff.data.Standardize(inner, *ff.data.fit_standardization(x))
    seen = recorded_batches(model, monkeypatch)
    train(model, x, quick(steps=2), levels=LEVELS)
    idx = ff.train.batch_indices(0, 2, len(x), 32)
    assert torch.equal(torch.floor(seen[-1].double() * LEVELS).long(), values[idx])


def test_a_run_on_the_digits_says_how_its_noise_is_drawn(tmp_path):
    def spec(**train_options) -> RunSpec:
        options = dict(steps=2, batch_size=16, eval_every=0, progress=False, max_val_samples=8)
        return RunSpec(
            model="realnvp",
            data="digits",
            model_options={"layers": 2, "hidden": [8]},
            data_options={},
            standardize=True,
            train=TrainConfig(**{**options, **train_options}),
        )

    start(spec(), tmp_path / "redraw")
    start(spec(dequantization="fixed"), tmp_path / "fixed")
    redraw = json.loads((tmp_path / "redraw" / "config.json").read_text())
    fixed = json.loads((tmp_path / "fixed" / "config.json").read_text())
    assert redraw["dequantization"] == fixed["dequantization"] == "uniform"
    assert redraw["dequantization_noise"] == "uniform, redrawn every batch"
    assert fixed["dequantization_noise"] == "uniform, drawn once at load"
    assert redraw["train"]["dequantization"] == "redraw"
    w_redraw, _ = ff.train.load_state_dict(tmp_path / "redraw", "last", ema=False)
    w_fixed, _ = ff.train.load_state_dict(tmp_path / "fixed", "last", ema=False)
    assert any(not torch.equal(v, w_fixed[k]) for k, v in w_redraw.items())
    # A checkerboard run (continuous data) records no dequantisation at all.
    toy = replace(spec(), data="checkerboard", data_options={"n_train": 256})
    start(toy, tmp_path / "toy")
    config = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert config["levels"] is None and "dequantization_noise" not in config


def test_a_run_from_before_the_redraw_resumes_with_its_fixed_noise(tmp_path):
    spec = RunSpec(
        model="realnvp",
        data="digits",
        model_options={"layers": 2, "hidden": [8]},
        data_options={},
        standardize=True,
        train=TrainConfig(steps=2, batch_size=16, eval_every=0, progress=False),
    )
    weights = {}
    for kind in ("fixed", "old", "redraw"):
        run = tmp_path / kind
        start(replace(spec, train=replace(spec.train, dequantization="fixed")), run)
        config = json.loads((run / "config.json").read_text())
        if kind == "old":  # config.json as written before the option existed
            del config["train"]["dequantization"], config["dequantization_noise"]
        if kind == "redraw":  # (the same first steps, then redrawn noise)
            config["train"]["dequantization"] = "redraw"
        (run / "config.json").write_text(json.dumps(config))
        resume(run, steps=4)
        weights[kind], _ = ff.train.load_state_dict(run, "last", ema=False)
    for k, v in weights["fixed"].items():
        assert torch.equal(v, weights["old"][k]), k
    assert any(not torch.equal(v, weights["redraw"][k]) for k, v in weights["fixed"].items())


def test_the_option_is_checked_and_reachable_from_the_command_line():
    with pytest.raises(ValueError, match="dequantization must be one of redraw, fixed; got 'once'"):
        TrainConfig(dequantization="once")
    assert TrainConfig().dequantization == "redraw"
    parser = build_parser()
    args = parser.parse_args(["train", "--dequantization", "fixed"])
    assert train_options({}, args).dequantization == "fixed"
    from_file = train_options({"dequantization": "fixed"}, parser.parse_args(["train"]))
    assert from_file.dequantization == "fixed"
    with pytest.raises(SystemExit):  # argparse's own error, status 2
        parser.parse_args(["train", "--dequantization", "once"])


# -- the logit preprocessing of glow and realnvp (docs/data.md: it beats standardisation) ---


def autograd_ladj(f, x: torch.Tensor) -> torch.Tensor:
    shape = x.shape[1:]
    flat = lambda v: f(v.view(1, *shape)).flatten()  # noqa: E731
    return torch.stack(
        [torch.linalg.slogdet(torch.func.jacrev(flat)(row.flatten()))[1] for row in x]
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [("glow", {"shape": (1, 4, 4)}), ("realnvp", {"shape": (2, 4, 4)}), ("realnvp", {"dim": 3})],
)
def test_the_logit_option_puts_an_exact_logit_first(name, options):
    torch.manual_seed(0)
    model = ff.models.create(name, **options, hidden=(8,), logit=0.05).double().eval()
    assert isinstance(model.transform.transforms[0], ff.transforms.Logit)
    x = ff.data.dequantize(torch.randint(17, (4, *model.event_shape)), 17, torch.Generator())
    x = x.double()
    z, _ = model.transform.forward_and_ladj(x)
    torch.testing.assert_close(model.decode(z), x, atol=1e-9, rtol=1e-9)
    expected = model.base.log_prob(z) + autograd_ladj(model.encode, x)
    torch.testing.assert_close(model.log_prob(x), expected)
    samples = model.sample(16)  # the logit's inverse reaches a little beyond [0, 1]
    edge = 0.05 / (1 - 2 * 0.05)
    assert float(samples.min()) > -edge and float(samples.max()) < 1 + edge
    plain = ff.models.create(name, **options, hidden=(8,))
    assert not any(isinstance(m, ff.transforms.Logit) for m in plain.modules())
    with pytest.raises(ValueError, match=r"logit must be a number in \(0, 0.5\).*got 0.7"):
        ff.models.create(name, **options, logit=0.7)


def test_a_logit_run_trains_on_the_unstandardised_levels(tmp_path):
    spec = RunSpec(
        model="glow",
        data="digits",
        model_options={"hidden": [8], "steps": 1, "logit": 0.05},
        data_options={"image": True},
        standardize=True,
        train=TrainConfig(steps=2, batch_size=16, eval_every=0, progress=False),
    )
    start(spec, tmp_path / "logit")
    config = json.loads((tmp_path / "logit" / "config.json").read_text())
    assert "standardization" not in config and config["preprocess"] == "logit, alpha=0.05"
    model, _ = ff.train.load(tmp_path / "logit")
    assert not isinstance(model, ff.data.Standardize)
    test = ff.data.load("digits", image=True).test[:8]
    assert bool(torch.isfinite(model.log_prob(test)).all())
    continuous = replace(
        spec, model="realnvp", data="checkerboard", data_options={}, model_options={"logit": 0.05}
    )
    with pytest.raises(ValueError, match=r"logit=0.05 preprocesses dequantised data.*logit=null"):
        start(continuous, tmp_path / "toy")


def test_runs_on_discrete_images_default_to_the_logit_where_a_recipe_has_it(tmp_path):
    spec = RunSpec(
        model="glow",
        data="digits",
        model_options={"hidden": [8], "steps": 1},
        data_options={"image": True},
        standardize=True,
        train=TrainConfig(steps=2, batch_size=16, eval_every=0, checkpoint_every=1, progress=False),
    )

    def config_of(run: str) -> dict:
        return json.loads((tmp_path / run / "config.json").read_text())

    start(spec, tmp_path / "default")
    config = config_of("default")
    assert config["model"]["options"]["logit"] == ff.train.run.IMAGE_LOGIT
    assert "standardization" not in config
    # The same command again finds the same run (the default is applied to it too).
    with pytest.raises(FileExistsError, match="finished at step 2"):
        start(spec, tmp_path / "default")
    start(replace(spec, model_options={"hidden": [8], "steps": 1, "logit": None}), tmp_path / "off")
    assert config_of("off")["preprocess"].startswith("standardize") and "standardization" in (
        config_of("off")
    )
    # Flat digits, and recipes without the option, train as they did.
    start(replace(spec, data_options={}), tmp_path / "flat")
    assert "logit" not in config_of("flat")["model"]["options"]
    start(replace(spec, model="nsf", model_options={"layers": 2, "hidden": [8]}), tmp_path / "nsf")
    assert "logit" not in config_of("nsf")["model"]["options"]
    assert "standardization" in config_of("nsf")
