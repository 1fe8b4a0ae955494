r"""Reflow rounds and one-step distillation: pairs saved in the run, training, lineage.

:func:`reflow` takes a trained flow-matching model, draws its noise/sample pairs
(:func:`flowforge.matching.reflow.decode_pairs`, saved as ``pairs-R.safetensors`` after every
chunk so generation resumes where it stopped), and trains a new model, a copy of the old one
by default, on the straight path between them; ``rounds=k`` repeats it on each new model's own
pairs. ``distill=True`` makes the last round a one-step distillation. :func:`reflow_run` does
the same from a run directory to a new one (``flowforge reflow``).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import save as st_save

from .._checks import check_bool, check_int
from .._version import __version__
from ..data.preprocess import Standardize
from ..distributions.model import Model
from ..matching import AffinePath, CondOTScheduler, FlowMatching, IndependentCoupling
from ..matching.meanflow import MeanFlow
from ..matching.reflow import DEFAULT_CHUNK, FixedTime, Pairs, decode_pairs, reflow_noise
from ..metrics.straightness import straightness, transport_cost
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import resolve_device
from .loop import TrainResult, train
from .python_run import DATA_FILE
from .run import load, load_state_dict

#: The recipe a reflowed model is rebuilt as, and the options it must have: the linear path
#: with sigma_min = 0 between the given pairs (the coupling is unused when pairs are given).
RECIPE = "rectified"
FORCED = {"path": "condot", "sigma_min": 0.0, "coupling": "independent"}
#: Noise points and RK4 steps of the straightness reported per round: enough for two
#: significant digits on 2-D data at 2 x 16 x 4 field evaluations a point.
STRAIGHTNESS_POINTS, STRAIGHTNESS_STEPS = 2048, 16
#: The straightness noise comes from its own seed, apart from every round's pairs.
_STRAIGHTNESS_SEED = 1_000_003
_FINISHED = ("steps", "time", "early_stop")


def pairs_file(round_: int) -> str:
    """The file name of round ``round_``'s pairs in a reflow run directory."""
    return f"pairs-{round_}.safetensors"


def round_dir(run_dir: Path, round_: int, rounds: int) -> Path:
    """Where round ``round_`` of ``rounds`` trains: the last in ``run_dir`` itself (the
    reflow's result), the others in ``run_dir/round-R`` (each a run of its own)."""
    return run_dir if round_ == rounds else run_dir / f"round-{round_}"


@dataclass(frozen=True)
class ReflowRound:
    """What one round did.

    Attributes:
        round: 1-based, within this call.
        pairs: the number of pairs trained on.
        seed: the seed their noise was drawn with.
        distill: whether the round trained the one-step map (else a reflow).
        transport_cost: :math:`\\mathbb E\\|x_1 - x_0\\|^2` of the pairs, in the model's space.
        straightness: :func:`~flowforge.metrics.straightness` of the model after the round.
        run_dir: where it trained (``None`` without a ``run_dir``).
        train: the training result (``None`` when the round was already trained).
    """

    round: int
    pairs: int
    seed: int
    distill: bool
    transport_cost: float
    straightness: float
    run_dir: str | None = None
    train: TrainResult | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "round": self.round,
            "pairs": self.pairs,
            "seed": self.seed,
            "distill": self.distill,
            "transport_cost": self.transport_cost,
            "straightness": self.straightness,
        }


@dataclass(frozen=True)
class ReflowResult:
    """The reflowed (or distilled) model and what each round measured.

    Attributes:
        model: the model of the last round, in eval mode (a CNF: ``sample``, ``log_prob``).
        rounds: one :class:`ReflowRound` per round.
        source_straightness: the straightness of the model reflow started from.
    """

    model: Model
    rounds: tuple[ReflowRound, ...] = field(default_factory=tuple)
    source_straightness: float = float("nan")


def flow_of(model: Model, name: str = "model") -> FlowMatching:
    """The :class:`~flowforge.matching.FlowMatching` inside ``model`` (which may be wrapped in
    :class:`~flowforge.data.Standardize`), or a ``TypeError`` saying what reflow needs."""
    inner = model.inner if isinstance(model, Standardize) else model
    # MeanFlow trains an average velocity of two times, not the field reflow straightens (and
    # already samples in one step): it is no reflow source.
    if not isinstance(inner, FlowMatching) or isinstance(inner, MeanFlow):
        raise TypeError(
            f"reflow needs a flow-matching model (fm, rectified, otfm, sbfm), got "
            f"{type(inner).__name__} for {name}"
        )
    return inner


def _model_space(model: Model, x: torch.Tensor) -> torch.Tensor:
    return model._standardize(x) if isinstance(model, Standardize) else x


def measure_straightness(model: Model, context: torch.Tensor | None = None) -> float:
    """:func:`~flowforge.metrics.straightness` of ``model`` on a fixed seeded set of
    :data:`STRAIGHTNESS_POINTS` noise points (RK4, :data:`STRAIGHTNESS_STEPS` steps)."""
    flow = flow_of(model)
    z = reflow_noise(flow.base, STRAIGHTNESS_POINTS, _STRAIGHTNESS_SEED)
    param = next(model.parameters())
    z = z.to(param.dtype)
    device = param.device
    c = None if context is None else context[:STRAIGHTNESS_POINTS].to(device)
    if c is not None and c.shape[0] < STRAIGHTNESS_POINTS:
        z = z[: c.shape[0]]
    return straightness(model, z.to(device), c, steps=STRAIGHTNESS_STEPS)


# -- pairs on disk -----------------------------------------------------------------------------


def save_pairs(path: Path, x0, x1, context, meta: dict[str, object], done: int) -> None:
    """Write pairs and their metadata (``done``: how many rows of ``x1`` are solved)."""
    tensors = {"x0": x0, "x1": x1}
    if context is not None:
        tensors["context"] = context
    info = {"meta": json.dumps(meta, sort_keys=True), "done": str(done)}
    ckpt.write_atomic(Path(path), st_save(ckpt._contiguous(tensors), metadata=info))


def load_pairs(path: str | Path) -> tuple[Pairs, dict[str, object], int]:
    """``(pairs, meta, done)`` of a pairs file (``done < len(pairs)``: generation stopped)."""
    tensors, info = ckpt._read_safetensors(Path(path))
    try:
        meta = json.loads(info["meta"])
        done = int(info["done"])
        pairs = Pairs(tensors["x0"], tensors["x1"], tensors.get("context"), meta.get("seed"))
    except (KeyError, ValueError, TypeError) as e:
        raise ckpt.CheckpointError(f"{path} is not a flowforge pairs file ({e})") from None
    return pairs, meta, done


def generate_pairs(
    model: Model,
    n: int,
    *,
    seed: int = 0,
    context: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    solver: dict[str, object] | None = None,
    path: str | Path | None = None,
    progress: bool = True,
) -> Pairs:
    r"""``n`` pairs :math:`(z, \mathrm{decode}(z))` of ``model``, exactly reproducible from
    ``seed`` (and ``chunk_size``, ``solver``).

    With ``path`` they are saved there (safetensors, atomically) after every chunk; called
    again with the same arguments it continues from the last saved chunk, or returns the
    finished pairs without solving anything. A file written with other arguments is an error.

    Args:
        model: a trained flow-matching model (possibly standardised).
        n: the number of pairs.
        seed: the seed of the noise :math:`z` (:func:`~flowforge.matching.reflow.reflow_noise`).
        context: ``(n,)`` labels or ``(n, C)`` features for a conditional model, else ``None``.
        chunk_size: pairs per solve (bounds memory).
        solver: solver options (default: dopri5 at 1e-5).
        path: a ``.safetensors`` file to save to and resume from.
        progress: a progress bar.
    """
    flow = flow_of(model)
    check_int(n, "n", 1, "a positive number of pairs")
    if flow.conditional and context is None:
        raise ValueError(
            f"the model is conditional: pass context, one label (or feature row) per pair ({n})"
        )
    if context is not None and context.shape[0] != n:
        raise ValueError(f"context must have one row per pair ({n}), got {tuple(context.shape)}")
    solver = dict(solver or {})
    meta = {"seed": seed, "n": n, "chunk_size": chunk_size, "solver": solver}
    x0 = reflow_noise(flow.base, n, seed)
    x1, done = None, 0
    if path is not None and Path(path).exists():
        saved, saved_meta, done = load_pairs(path)
        if saved_meta != json.loads(json.dumps(meta, sort_keys=True)):
            raise ValueError(
                f"{path} holds pairs drawn with other settings ({saved_meta}, asked for {meta}); "
                "use those settings, or delete the file to draw new pairs"
            )
        if done >= n:
            return saved
        x1 = saved.x1

    def on_chunk(x1_now: torch.Tensor, done_now: int) -> None:
        if path is not None:
            save_pairs(Path(path), x0, x1_now, context, meta, done_now)

    x1 = decode_pairs(
        model,
        x0,
        context,
        chunk_size=chunk_size,
        x1=x1,
        done=done,
        on_chunk=on_chunk,
        progress=progress,
        **solver,
    )
    return Pairs(x0, x1, context, seed)


# -- the new model -----------------------------------------------------------------------------


def student(model: Model, warm_start: bool = True) -> Model:
    """The model a reflow round trains: a copy of ``model`` (``warm_start``) or a fresh one of
    the same recipe, with the linear path (:data:`FORCED`) and rebuilt as :data:`RECIPE`."""
    check_bool(warm_start, "warm_start")
    flow = flow_of(model)
    built = getattr(flow, "created_with", None)
    if warm_start:
        new = copy.deepcopy(model)
    else:
        if not isinstance(built, dict):
            raise ValueError(
                "warm_start=False rebuilds the model from its recipe, but this one was not "
                "built by flowforge.models.create; pass warm_start=True"
            )
        from .. import models

        inner = models.create(RECIPE, shape=tuple(built["shape"]), **{**built["options"], **FORCED})
        new = inner
        if isinstance(model, Standardize):
            new = Standardize(inner, model.mean.clone(), model.std.clone())
        new = new.to(next(model.parameters()).device)
    new_flow = flow_of(new)
    new_flow.path = AffinePath(CondOTScheduler(sigma_min=0.0))
    new_flow.coupling = IndependentCoupling()
    if isinstance(built, dict):
        new_flow.created_with = {
            **built,
            "name": RECIPE,
            "options": {**built["options"], **FORCED},
        }
    return new


def _train_round(
    model: Model, pairs: Pairs, config: TrainConfig, rdir: Path, distill: bool, desc: str
) -> TrainResult | None:
    """Train ``model`` on ``pairs`` in ``rdir`` (resuming a checkpoint there), then load the
    weights sampling uses (EMA when kept). ``None`` when the round had already finished."""
    finished = False
    if ckpt.has_checkpoint(rdir):
        finished = ckpt.read_json(rdir / ckpt.STATE_JSON).get("stop_reason") in _FINISHED
    result = None
    dtype = next(model.parameters()).dtype
    pairs = Pairs(pairs.x0.to(dtype), pairs.x1.to(dtype), pairs.context, pairs.seed)
    if not finished:
        flow = flow_of(model)
        times = flow.time_sampler
        if distill:  # the loss at t = 0 on the linear path is the one-step loss
            flow.time_sampler = FixedTime(0.0)
        try:
            result = train(
                model,
                pairs.x1,
                config,
                run_dir=rdir,
                train_context=pairs.context,
                train_noise=pairs.x0,
                resume=rdir.is_dir(),
                desc=desc,
            )
        finally:
            flow.time_sampler = times
    weights, _ = load_state_dict(rdir, weights="last", ema=True)
    model.load_state_dict(weights)
    return result


def reflow(
    model: Model,
    pairs: int | Pairs = 10_000,
    config: TrainConfig | None = None,
    *,
    rounds: int = 1,
    distill: bool = False,
    seed: int = 0,
    warm_start: bool = True,
    context: torch.Tensor | None = None,
    solver: dict[str, object] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    run_dir: str | Path | None = None,
    progress: bool = True,
    prepare: Callable[[Path, int], None] | None = None,
    lineage: dict[str, object] | None = None,
) -> ReflowResult:
    r"""Reflow ``model`` (Liu et al., 2022): train a new flow on its own noise/sample pairs.

    Each round draws ``pairs`` pairs :math:`(z, x = \mathrm{decode}(z))` of the current model
    (noise from seed ``seed + round - 1``, solved accurately, :func:`generate_pairs`), builds
    the new model (a copy of the current one when ``warm_start``, else a fresh one of its
    recipe) with the linear path of ``sigma_min = 0`` (the ``rectified`` recipe's), and trains
    it with ``config`` on the pairs as given (``train(..., train_noise=z)``: no coupling is
    drawn). ``rounds=k`` turns a 1-rectified model into a (k+1)-rectified one. The new flow
    keeps the marginals while its paths straighten, so few Euler steps sample well; each round
    reports the transport cost of its pairs and the straightness of the model it trained.

    ``distill=True`` makes the last round a one-step distillation (Liu et al., §2.3): the same
    pairs, the loss :math:`\|x_1 - (z + v_\theta(0, z))\|^2` (the flow-matching loss with
    every time at 0), so that ``sample(n, steps=1)`` is the sampler. The result is still a CNF
    with an exact ``log_prob`` through its field, but distillation trained only the field at
    :math:`t = 0`, so that density is not what it fitted (reflow's is: expect some NLL cost).

    With ``run_dir`` each round's pairs are kept as ``pairs-R.safetensors`` and each round
    trains in a run directory (the last in ``run_dir``, others in ``run_dir/round-R``), so a
    stopped reflow resumes when called again with the same arguments. Without it the rounds
    train in a temporary directory.

    Args:
        model: a trained flow-matching model (``fm``, ``rectified``, ``otfm``, ``sbfm``).
        pairs: the number of pairs per round, or the first round's :class:`Pairs` (later
            rounds draw as many).
        config: training options of every round (default :class:`TrainConfig`'s).
        rounds: the number of rounds, >= 1.
        distill: make the last round a one-step distillation.
        seed: round ``r`` draws its noise with seed ``seed + r - 1``.
        warm_start: start each round from the current model's weights.
        context: ``(pairs,)`` labels (or features) of a conditional model's pairs.
        solver: solver options of the pair generation (default: dopri5 at 1e-5).
        chunk_size: pairs per solve.
        run_dir: where pairs and rounds are kept (optional).
        progress: progress bars.
        prepare: called as ``prepare(round_dir, round)`` before a round trains and again
            after (the command line writes each round's ``config.json`` and data there; the
            training loop writes its own for a model trained from arrays).
        lineage: keys recorded under ``"reflow"`` in each round's ``config.json`` (where there
            is one), beside the rounds' measurements.

    Returns:
        A :class:`ReflowResult`.

    Example:
        >>> model = flowforge.models.create("rectified", dim=2)  # doctest: +SKIP
        >>> config = flowforge.train.TrainConfig(steps=2000)  # doctest: +SKIP
        >>> flowforge.train.train(model, x, config)  # doctest: +SKIP
        >>> result = flowforge.train.reflow(model, pairs=10_000, config=config)  # doctest: +SKIP
        >>> x = result.model.sample(1000, steps=1)  # doctest: +SKIP
    """
    check_int(rounds, "rounds", 1, "a positive number of rounds")
    check_bool(distill, "distill")
    check_int(seed, "seed", 0, "an integer >= 0")
    config = config or TrainConfig()
    flow_of(model)
    given = pairs if isinstance(pairs, Pairs) else None
    n = len(given) if given is not None else check_int(pairs, "pairs", 1, "a positive number")
    temp = tempfile.TemporaryDirectory() if run_dir is None else None
    root = Path(temp.name) if temp is not None else ckpt.check_run_dir(cast(Path, run_dir))
    device = resolve_device(config.device)
    current = model.to(device)
    if context is None and given is not None:
        context = given.context
    reports: list[ReflowRound] = []
    try:
        source = measure_straightness(current, context)
        for r in range(1, rounds + 1):
            last_is_distill = distill and r == rounds
            round_seed = seed + r - 1
            if r == 1 and given is not None:
                round_pairs = given
            else:
                round_pairs = generate_pairs(
                    current,
                    n,
                    seed=round_seed,
                    context=context,
                    chunk_size=chunk_size,
                    solver=solver,
                    path=None if temp is not None else root / pairs_file(r),
                    progress=progress,
                )
            rdir = round_dir(root, r, rounds)
            if prepare is not None:
                prepare(rdir, r)
            new = student(current, warm_start).to(device)
            what = "distill" if last_is_distill else "reflow"
            result = _train_round(new, round_pairs, config, rdir, last_is_distill, f"{what} {r}")
            if prepare is not None:  # again: a run from arrays gets its config rewritten
                prepare(rdir, r)
            new.eval()
            like = next(current.parameters())
            cost = transport_cost(
                round_pairs.x0.to(like), _model_space(current, round_pairs.x1.to(like))
            )
            report = ReflowRound(
                round=r,
                pairs=len(round_pairs),
                seed=round_pairs.seed if round_pairs.seed is not None else round_seed,
                distill=last_is_distill,
                transport_cost=cost,
                straightness=measure_straightness(new, context),
                run_dir=None if temp is not None else str(rdir),
                train=result,
            )
            reports.append(report)
            if temp is None:
                _record(rdir, lineage, source, reports)
            current = new
    finally:
        if temp is not None:
            temp.cleanup()
    return ReflowResult(current.eval(), tuple(reports), source)


def _record(rdir: Path, lineage, source: float, reports: list[ReflowRound]) -> None:
    """Add the lineage and the rounds' measurements to ``rdir/config.json`` (if it has one)."""
    path = rdir / ckpt.CONFIG_FILE
    if not path.exists():
        return
    config = ckpt.read_json(path)
    config["reflow"] = {
        **(lineage or {}),
        **config.get("reflow", {}),
        "source_straightness": source,
        "measured": [r.to_dict() for r in reports],
    }
    ckpt.write_json_atomic(path, config)


# -- from a run directory ----------------------------------------------------------------------


def reflow_run(
    source: str | Path,
    out: str | Path,
    *,
    pairs: int = 10_000,
    steps: int | None = None,
    rounds: int = 1,
    distill: bool = False,
    seed: int = 0,
    warm_start: bool = True,
    solver: dict[str, object] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    train_changes: dict[str, object] | None = None,
    progress: bool = True,
) -> ReflowResult:
    """Reflow the run in ``source`` into a new run directory ``out`` (``flowforge reflow``).

    ``out`` is a normal run (``config.json`` rebuilding a :data:`RECIPE` model with the
    source's options and the linear path, its data and standardisation, the weights) that
    ``sample``, ``evaluate`` and ``compare`` read; its ``config.json`` records the lineage
    under ``"reflow"``: the source run and model, how many times the result is rectified, the
    pair count, seeds, whether it is distilled, and under ``"measured"`` per round the
    transport cost and straightness. Earlier rounds of ``rounds > 1`` are runs in
    ``out/round-R``. Calling it again with the same arguments resumes it (pairs from their
    files, training from its checkpoint). Training takes the source run's options, with
    ``steps`` and ``train_changes`` over them.

    Args:
        source: a trained flow-matching run.
        out: the new run directory.
        pairs, rounds, distill, seed, warm_start, solver, chunk_size: as :func:`reflow`.
        steps: training steps per round (default: the source run's).
        train_changes: other training options to change (``lr``, ``batch_size``, ...).
        progress: progress bars.
    """
    source = Path(source)
    model, config = load(source)
    name = config["model"]["name"]
    flow_of(model, f"the run {source} ({name})")
    out = ckpt.check_run_dir(out, "--out")
    if out.resolve() == source.resolve():
        raise ValueError("--out must be a new directory, not the source run itself")
    options = dict(config["train"])
    options.update(train_changes or {})
    if steps is not None:
        options["steps"] = steps
    options["progress"] = progress
    train_config = TrainConfig.from_dict(options)
    before = config.get("reflow", {})
    rectified = int(before.get("rectified", 1))
    if before.get("distilled"):
        raise ValueError(
            f"{source} is a distilled one-step model; reflow its teacher instead "
            f"({before.get('source')})"
        )
    settings = {
        "source": str(source),
        "source_model": name,
        "pairs": pairs,
        "seed": seed,
        "rounds": rounds,
        "distill": distill,
        "warm_start": warm_start,
        "solver": dict(solver or {}),
        "chunk_size": chunk_size,
    }
    existing = out / ckpt.CONFIG_FILE
    if existing.exists():
        stored = ckpt.read_json(existing)
        mine = {k: stored.get("reflow", {}).get(k) for k in settings}
        trained = {**stored.get("train", {}), "progress": progress}
        if mine != json.loads(json.dumps(settings)) or trained != json.loads(
            json.dumps(train_config.to_dict())
        ):
            raise FileExistsError(
                f"{out} already holds another run; choose another --out (the same command "
                "resumes a stopped reflow)"
            )
    labels = None
    if config.get("conditional"):
        counts = torch.tensor(config["label_counts"], dtype=torch.float64)
        g = torch.Generator().manual_seed(seed)
        labels = torch.multinomial(counts, pairs, replacement=True, generator=g)
    base = {k: v for k, v in config.items() if k not in ("loaded", "run_dir", "reflow")}
    recipe_options = {**config["model"].get("options", {}), **FORCED}

    def prepare(rdir: Path, r: int) -> None:
        rdir.mkdir(parents=True, exist_ok=True)
        if config["data"].get("in_run"):
            shutil.copyfile(source / DATA_FILE, rdir / DATA_FILE)
        teacher = rectified + r - 1
        record = {
            **base,
            "flowforge_version": __version__,
            "model": {"name": RECIPE, "options": recipe_options},
            "train": train_config.to_dict(),
            "reflow": {
                **settings,
                "round": r,
                "rectified": teacher if distill and r == rounds else teacher + 1,
                "distilled": bool(distill and r == rounds),
            },
        }
        ckpt.write_json_atomic(rdir / ckpt.CONFIG_FILE, record)

    return reflow(
        model,
        pairs,
        train_config,
        rounds=rounds,
        distill=distill,
        seed=seed,
        warm_start=warm_start,
        context=labels,
        solver=solver,
        chunk_size=chunk_size,
        run_dir=out,
        progress=progress,
        prepare=prepare,
    )
