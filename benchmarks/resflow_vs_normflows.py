"""Benchmark flowforge's ``resflow`` against normflows' residual flow on the 2-D checkerboard.

Both flows get the same architecture, estimator and budget. Each flow, in the normalizing
(data-to-base) direction, is ``ActNorm, Residual, ActNorm, Residual, ..., Residual, ActNorm``:
8 residual blocks ``y = x + g(x)`` and 9 ActNorms with data-dependent initialisation, onto a
fixed ``N(0, I)`` base. Each branch is ``g(x) = W3 phi(W2 phi(W1 phi(x) + b1) + b2) + b3``
with 2 -> 128 -> 128 -> 2 spectrally normalised linear layers and LipSwish activations
``phi(x) = x sigmoid(beta x) / 1.1`` (learned ``beta``), and ``Lip(g) <= 0.97``. Training
estimates each block's log-det by the Russian-roulette power series (2 terms always, then a
geometric(1/2) number of extra terms, one draw per batch) with the Neumann-series
("reduce_memory") gradient, and runs one power-iteration step per spectral norm per step. Both
are trained with Adam (by default lr 1e-3, constant; ``--schedule cosine`` gives both
flowforge's trainer schedule, warm-up then cosine decay) for 1,500 steps of batch 256 on the
*same* pre-generated batches per seed; each model is built right after
``torch.manual_seed(seed)`` (and ``numpy.random.seed(seed)``: normflows draws its roulette
from numpy). Runs are interleaved
per seed (flowforge seed 0, normflows seed 0, flowforge seed 1, ...).

Measured per run:

* exact test NLL (nats) on a held-out test set (20,000 points, seed 20_240_601), with
  ``ff.metrics.nll`` for both (chunks of 5,000, under ``torch.no_grad()``); the floor is
  ln 32 = 3.466 nats. Both libraries evaluate in ``eval()`` mode, where each computes the
  exact log-det of every block (checked for flowforge with ``model.log_prob_is_exact``);
* the median wall time of one training step (forward + backward + optimizer step, plus
  normflows' ``update_lipschitz``), after 50 warm-up steps, and the total training time;
* the median time of ``log_prob`` over the test set and of sampling 2,000 points (both
  invert each block by fixed-point iteration), and the round-trip error
  ``max |encode(decode(z)) - z|`` on those 2,000 base points.

Because the machine is shared, training-step time is also measured round-robin (as in
``fm_vs_peers.py``): fresh models of both libraries take turns, ``--rounds`` rounds of
``--round-steps`` steps each on one batch, and the medians of those steps are compared.

Matching normflows (1.7.3; paths relative to its package; reading its source, not copying it):

* **Branch layout.** ``nf.nets.LipschitzMLP`` puts a ``Swish`` before *every* linear layer,
  the first included (``nets/lipschitz.py`` l. 48-62), so its branch is
  ``W3 phi(W2 phi(W1 phi(x)))``, as in Chen et al.'s code (``train_toy.py``, ``build_nnet``)
  and, since the fix of the slow start (docs/benchmarks.md), flowforge's default
  (``input_activation=True``). The normflows branch is assembled from normflows' own layers,
  ``nf.nets.lipschitz.InducedNormLinear`` and ``Swish``, in flowforge's order (without the
  input ``Swish`` when ``--ff-option input_activation=False``), with the last layer's weights
  shrunk like ``init_zeros=True`` does (l. 196-200). ``--normflows-mlp`` uses
  ``nf.nets.LipschitzMLP`` as shipped instead.
* **Lipschitz coefficient.** normflows' ``lipschitz_const`` bounds each linear layer
  (l. 54), flowforge's ``coeff`` the whole branch (each of its ``L`` layers gets
  ``coeff ** (1 / L)``). normflows' layers get ``0.97 ** (1 / 3) = 0.98990`` each, so both
  branches are bounded by 0.97. (normflows' example uses 16 blocks, ``lipschitz_const=0.9``
  per layer, i.e. 0.729 per branch, batch 512, lr 3e-4.)
* **Number of series terms.** normflows draws ``N >= 1`` with ``np.random.geometric``
  (``flows/residual.py`` l. 404-405) and computes ``N + n_exact_terms`` terms (l. 177), so its
  ``n_exact_terms=2`` always computes 3 terms, 4 on average. flowforge draws ``N >= 0`` and
  computes ``n_exact_terms + N``. normflows' ``n_exact_terms = m - 1`` and flowforge's
  ``n_exact_terms = m`` (``--exact-terms``, default 2) give the *same* law of the number of
  terms and the same weights ``1{N >= j} / P(N >= j)`` (l. 178-183, 408-414): 3
  vector-Jacobian products per block on average, plus the one of the Neumann gradient.
* **Gradient.** ``Residual(reduce_memory=True)`` (l. 12-61) uses the Neumann-series gradient
  and computes it in the forward pass (``MemoryEfficientLogDetEstimator``, l. 207-216, 282-352);
  flowforge's ``neumann_grad=True`` backpropagates through one vector-Jacobian product.
  Both gradients are unbiased. With ``neumann_grad`` normflows returns the Neumann surrogate
  as the log-det *value* (l. 368-379), so its training loss is not an NLL estimate: only
  test NLLs are compared.
* **Probe.** normflows' Hutchinson probe is Gaussian (l. 204); flowforge's default is
  Rademacher (lower variance, same cost). ``--probe gaussian`` gives flowforge Gaussian
  probes too.
* **Spectral norms.** normflows' ``InducedNormLinear.forward`` never updates its
  power-iteration vectors (``nets/lipschitz.py`` l. 272-274); the user calls
  ``nf.utils.update_lipschitz(model, n)`` after each step (normflows' example: ``n = 50``).
  flowforge runs ``n_power_iterations`` steps at each training call. Both get
  ``--power-iterations`` (default 1) per step, normflows' call inside the timed step. Before
  evaluation both are converged: flowforge does it itself on the first ``eval()`` call,
  normflows gets ``update_lipschitz(model, 200)``, the count its layers use at construction
  (l. 178).
* **Exact evaluation.** ``iResBlock._logdetgrad`` computes the exact 2x2 Jacobian
  determinant whenever the block is not training and the input is ``(B, 2)``
  (``flows/residual.py`` l. 148-160), whatever ``brute_force`` says; so ``eval()`` gives
  both libraries' exact log-densities, and ``brute_force=False`` keeps normflows' training
  on the roulette estimator.
* **Direction.** ``Residual(reverse=True)`` (the default) applies ``x + g(x)`` in
  ``inverse``, which ``NormalizingFlow.log_prob``/``forward_kld`` run from data to base
  (``core.py`` l. 87-102, 182-197), and the fixed-point inverse in ``forward`` (sampling):
  the same directions as flowforge's ``ResidualBlock``. normflows' list of flows is in
  sampling order, so it is built as ``[ActNorm] + [Residual, ActNorm] * 8``.
* **Inversion tolerance.** normflows iterates until ``(x_k - x_{k-1})^2 < 1e-5 (1 + |y|)``
  elementwise (l. 133-140), a step of about 3e-3; flowforge until ``max |x_k - x_{k-1}| <=
  1e-5``. Sampling is timed at each library's default; flowforge's is also timed at
  ``tol = 3.2e-3`` (``sample_loose_ms``), and the round-trip error shows the accuracy bought.
* **Initialisation** is each library's own: normflows' last layer starts near zero (weights
  / 1000) and ``beta = softplus(0.5)``; flowforge's layers start as ``nn.Linear`` and
  ``beta = 16`` (``LIPSWISH_BETA``; 1 before the slow-start fix). normflows' ``iResBlock``
  registers its roulette settings ``geom_p`` and ``lamb`` as parameters that never get
  gradients; they are left out of the counts.

Variants, for the experiments behind the defaults (docs/benchmarks.md, "the slow start at
lr 1e-3"): ``--screen`` trains and scores only (no timing), ``--libraries`` runs one side,
``--ff-option KEY=VALUE`` passes a keyword to flowforge's recipe (``input_activation=False``
also drops the input ``Swish`` of normflows' matched branch), ``--ff-last-scale`` and
``--ff-normalize-init`` change flowforge's initialisation, ``--normflows-layer-coeff`` sets
normflows' per-layer bound (its example's 0.9), e.g.::

    OMP_NUM_THREADS=1 python benchmarks/resflow_vs_normflows.py --steps 1000 --lr 1e-3 \
        --threads 1 --screen --libraries flowforge --seeds 0 \
        --ff-option input_activation=False --ff-option beta=1.0

The acceptance bar (from the issue): flowforge's test NLL no worse than normflows', and its
training step no slower.

Reproduce (normflows is a benchmark-only dependency, e.g. ``pip install normflows``)::

    python benchmarks/resflow_vs_normflows.py            # first run, 3 seeds, ~15 min on 2 cores
    python benchmarks/resflow_vs_normflows.py --quick    # smoke test: 50 steps, 1 seed
    # the headline run of docs/benchmarks.md, where both flows learn (~40 min), with the curves
    # of test NLL against step in resflow_vs_normflows_long.png:
    python benchmarks/resflow_vs_normflows.py --steps 4000 --lr 5e-3 --schedule cosine \
        --eval-every 500 --out benchmarks/results/resflow_vs_normflows_long.json

A training step costs about 85 ms in either library on 2 idle cores (torch 2.13 CPU), so the
full run is about 13 minutes of training and 1.5 of evaluation and round-robin timing; the
1,500 steps are set by that budget.

Raw per-seed numbers and the summary are written to
``benchmarks/results/resflow_vs_normflows.json``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import itertools
import math
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

try:
    import normflows as nf
    from normflows.nets.lipschitz import InducedNormLinear, Swish
except ImportError:
    sys.exit("normflows is not installed; install it for this benchmark: pip install normflows")

import flowforge as ff
from _common import environment, interleaved_runs, median_time, prepare, write_report

LIBRARIES = ("flowforge", "normflows")
TEST_SEED = 20_240_601
# The round-robin timing batch: distinct from the training seeds and the test seed.
TIMING_SEED = 20_240_602
WARMUP_STEPS = 50
EVAL_CHUNK = 5_000
SAMPLE_SIZE = 2_000
TIMING_REPEATS = 3
LOG_EVERY = 500
# normflows runs this many power-iteration steps per layer at construction (lipschitz.py
# l. 178); enough to converge its vectors before evaluation.
CONVERGE_ITERATIONS = 200
# normflows' fixed-point stopping rule (x_k - x_{k-1})^2 < 1e-5 (1 + |y|) is a step of about
# sqrt(1e-5); flowforge's sampling is also timed at this tolerance.
LOOSE_TOL = math.sqrt(1e-5)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The settings both flows share."""

    blocks: int
    hidden: tuple[int, ...]
    coeff: float
    exact_terms: int
    p: float
    power_iterations: int
    probe: str
    normflows_mlp: bool
    # Experiment variants (docs/benchmarks.md, "the slow start at lr 1e-3"):
    # normflows' per-layer bound instead of the matched coeff ** (1 / L) (its example: 0.9);
    normflows_layer_coeff: float | None = None
    # keyword arguments passed to flowforge's recipe on top of the shared settings.
    flowforge_options: tuple[tuple[str, Any], ...] = ()
    # multiply the last linear layer of every flowforge branch by this after construction.
    flowforge_last_scale: float | None = None
    # replace every flowforge spectral layer's raw weight by its normalised one at init.
    flowforge_normalize_init: bool = False

    @property
    def linear_layers(self) -> int:
        """Linear layers per branch."""
        return len(self.hidden) + 1

    @property
    def layer_coeff(self) -> float:
        """Per-layer Lipschitz bound whose product over the branch is ``coeff``."""
        return self.coeff ** (1 / self.linear_layers)

    @property
    def input_activation(self) -> bool:
        """Whether flowforge's branch (and so normflows' matched one) starts with an activation."""
        return bool(dict(self.flowforge_options).get("input_activation", True))

    @property
    def normflows_coeff(self) -> float:
        """normflows' per-layer Lipschitz bound."""
        if self.normflows_layer_coeff is not None:
            return self.normflows_layer_coeff
        return self.layer_coeff


class FlowforgeResFlow(nn.Module):
    """flowforge's ``resflow`` recipe behind the benchmark's interface."""

    def __init__(self, arch: Architecture) -> None:
        """Build ``ff.models.create("resflow", ...)`` with the shared settings."""
        super().__init__()
        self.flow = ff.models.create(
            "resflow",
            dim=2,
            layers=arch.blocks,
            hidden=arch.hidden,
            coeff=arch.coeff,
            estimator="roulette",
            distribution="geometric",
            p=arch.p,
            n_exact_terms=arch.exact_terms,
            neumann_grad=True,
            eval_estimator="exact",
            n_power_iterations=arch.power_iterations,
            **dict(arch.flowforge_options),
        )
        if arch.flowforge_last_scale is not None:
            with torch.no_grad():
                for block in self.blocks():
                    last = block.branch.linears[-1]
                    last.weight.mul_(arch.flowforge_last_scale)
                    last.converge()
        with torch.no_grad():
            for m in self.flow.modules():
                if arch.flowforge_normalize_init and isinstance(m, ff.nets.SpectralLinear):
                    m.weight.copy_(m.normalized_weight())
                    m.converge()
        if arch.probe != "rademacher":
            for block in self.blocks():
                block.train_logdet = dataclasses.replace(block.train_logdet, probe=arch.probe)

    def blocks(self) -> list[ff.transforms.ResidualBlock]:
        """The residual blocks."""
        return [m for m in self.flow.modules() if isinstance(m, ff.transforms.ResidualBlock)]

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood of ``x (B, 2)``, log-dets estimated in training."""
        return self.flow.loss(x)

    def after_step(self) -> None:
        """Nothing: the power iteration runs inside each training call."""

    def prepare_eval(self) -> bool:
        """Switch to evaluation; say whether ``log_prob`` is now exact."""
        self.eval()
        return self.flow.log_prob_is_exact

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x (B, 2)``, shape ``(B,)``."""
        return self.flow.log_prob(x)

    def sample(self, n: int) -> Tensor:
        """``n`` samples, shape ``(n, 2)``."""
        return self.flow.sample(n)

    def decode(self, z: Tensor) -> Tensor:
        """Base points to data, ``(B, 2)``."""
        return self.flow.decode(z)

    def encode(self, x: Tensor) -> Tensor:
        """Data to base points, ``(B, 2)``."""
        return self.flow.encode(x)

    @contextmanager
    def inversion_tol(self, tol: float) -> Iterator[None]:
        """Within the block, every residual block inverts to ``tol``."""
        blocks = self.blocks()
        before = [b.tol for b in blocks]
        for b in blocks:
            b.tol = tol
        try:
            yield
        finally:
            for b, t in zip(blocks, before, strict=True):
                b.tol = t


class NormflowsResFlow(nn.Module):
    """normflows' residual flow with the shared settings, behind the benchmark's interface."""

    def __init__(self, arch: Architecture) -> None:
        """Build ``nf.NormalizingFlow`` from ``nf.flows.Residual`` and ``nf.flows.ActNorm``."""
        super().__init__()
        self.power_iterations = arch.power_iterations
        # normflows lists flows in sampling order (base to data).
        flows: list[nn.Module] = [nf.flows.ActNorm(2)]
        for _ in range(arch.blocks):
            residual = nf.flows.Residual(
                self._branch(arch),
                reverse=True,
                reduce_memory=True,
                geom_p=arch.p,
                n_dist="geometric",
                n_samples=1,
                # normflows computes n_exact_terms + N terms with N >= 1 (see the docstring).
                n_exact_terms=arch.exact_terms - 1,
                brute_force=False,
                exact_trace=False,
            )
            flows += [residual, nf.flows.ActNorm(2)]
        q0 = nf.distributions.DiagGaussian(2, trainable=False)
        self.flow = nf.NormalizingFlow(q0=q0, flows=flows)

    @staticmethod
    def _branch(arch: Architecture) -> nn.Module:
        sizes = [2, *arch.hidden, 2]
        if arch.normflows_mlp:
            return nf.nets.LipschitzMLP(
                sizes,
                lipschitz_const=arch.normflows_coeff,
                max_lipschitz_iter=arch.power_iterations,
                init_zeros=True,
            )
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            if i or arch.input_activation:
                layers.append(Swish())
            layers.append(
                InducedNormLinear(
                    a,
                    b,
                    coeff=arch.normflows_coeff,
                    domain=2,
                    codomain=2,
                    n_iterations=arch.power_iterations,
                    zero_init=i == len(sizes) - 2,
                )
            )
        return nn.Sequential(*layers)

    def loss(self, x: Tensor) -> Tensor:
        """``forward_kld``: mean negative log-likelihood with normflows' training estimator."""
        return self.flow.forward_kld(x)

    def after_step(self) -> None:
        """Update the spectral norms' power iteration, as normflows requires after each step."""
        nf.utils.update_lipschitz(self.flow, self.power_iterations)

    def prepare_eval(self) -> bool:
        """Converge the spectral norms and switch to evaluation, whose 2-D log-det is exact."""
        nf.utils.update_lipschitz(self.flow, CONVERGE_ITERATIONS)
        self.eval()
        return True

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x (B, 2)``, shape ``(B,)``."""
        return self.flow.log_prob(x)

    def sample(self, n: int) -> Tensor:
        """``n`` samples, shape ``(n, 2)``."""
        return self.flow.sample(n)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Base points to data, ``(B, 2)``."""
        return self.flow.forward(z)

    def encode(self, x: Tensor) -> Tensor:
        """Data to base points, ``(B, 2)``."""
        return self.flow.inverse(x)


def build_model(library: str, arch: Architecture, seed: int) -> nn.Module:
    """A fresh, untrained residual flow of ``library``, built after seeding torch and numpy."""
    torch.manual_seed(seed)
    # normflows draws its roulette from numpy's legacy global generator.
    np.random.seed(seed)  # noqa: NPY002
    if library == "flowforge":
        return FlowforgeResFlow(arch)
    if library == "normflows":
        return NormflowsResFlow(arch)
    raise ValueError(f"unknown library {library!r}")


def count_parameters(model: nn.Module) -> int:
    """Trainable weights; normflows' roulette settings, registered as parameters, left out."""
    return sum(
        p.numel() for n, p in model.named_parameters() if not n.endswith((".geom_p", ".lamb"))
    )


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor) -> float:
    """One training step on ``x (B, 2)``; the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(x)
    loss.backward()
    optimizer.step()
    model.after_step()
    return loss.item()


@torch.no_grad()
def log_prob_pass(model: nn.Module, test: Tensor) -> None:
    """``log_prob`` over ``test`` in chunks of ``EVAL_CHUNK``, for timing."""
    for chunk in test.split(EVAL_CHUNK):
        model.log_prob(chunk)


@torch.no_grad()
def draw(model: nn.Module, n: int) -> Tensor:
    """``n`` samples of ``model`` without autograd."""
    return model.sample(n)


@torch.no_grad()
def roundtrip_error(model: nn.Module, z: Tensor) -> float:
    """``max |encode(decode(z)) - z|`` over the base points ``z (B, 2)``."""
    return float((model.encode(model.decode(z)) - z).abs().max())


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The optimiser settings both libraries share: Adam at ``lr``, constant or (``cosine``)
    flowforge's trainer schedule -- linear warm-up over ``warmup`` steps, then cosine decay to
    ``lr / 100`` -- and an exact test NLL on the first ``EVAL_CHUNK`` test points every
    ``eval_every`` steps (0: never)."""

    lr: float
    cosine: bool
    warmup: int
    eval_every: int
    # Screening: test NLL only, no timing of steps, log_prob or sampling.
    screen: bool = False

    def rates(self, steps: int) -> list[float]:
        """The learning rate of each of ``steps`` steps."""
        if not self.cosine:
            return [self.lr] * steps
        cfg = ff.train.TrainConfig(steps=steps, lr=self.lr, warmup_steps=self.warmup)
        return [cfg.lr_at(step) for step in range(1, steps + 1)]


@torch.no_grad()
def test_nll(model: nn.Module, test: Tensor) -> tuple[float, float, str | None]:
    """Exact test NLL of ``model`` on ``test``: ``(mean, stderr, error)``; switches the model
    to evaluation (``prepare_eval``) and leaves it there."""
    if not model.prepare_eval():
        raise RuntimeError("log_prob is not exact in eval mode")
    try:
        # The first evaluation call also converges flowforge's spectral norms.
        score = ff.metrics.nll(model, test, batch_size=EVAL_CHUNK)
    except ValueError as err:  # non-finite log-densities: a diverged run
        return math.nan, math.nan, str(err)
    return score.mean, score.stderr, None


def train_and_evaluate(
    library: str, seed: int, batches: Tensor, test: Tensor, schedule: Schedule, arch: Architecture
) -> dict[str, Any]:
    """Train one model on ``batches (steps, B, 2)``, then time and score it on ``test``."""
    model = build_model(library, arch, seed)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule.lr)
    steps = len(batches)
    step_times: list[float] = []
    losses: list[float] = []
    curve: list[dict[str, float]] = []
    nll_curve: list[dict[str, float]] = []
    log_every = min(LOG_EVERY, steps)
    eval_seconds = 0.0

    rates = schedule.rates(steps)
    wall_start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = rates[step]
        start = time.perf_counter()
        losses.append(train_step(model, optimizer, batches[step]))
        step_times.append(time.perf_counter() - start)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            window = losses[-log_every:]
            running = sum(window) / len(window)
            curve.append({"step": step + 1, "running_loss": running})
            print(f"  {library:9s} seed {seed}  step {step + 1:5d}  running loss {running:.4f}")
            sys.stdout.flush()
        if schedule.eval_every and (step + 1) % schedule.eval_every == 0 and step + 1 < steps:
            # Evaluation mode converges both libraries' power iterations (their state moves
            # alike); its time is left out of the training wall time.
            eval_start = time.perf_counter()
            mean, _, _ = test_nll(model, test[:EVAL_CHUNK])
            nll_curve.append({"step": step + 1, "test_nll": mean})
            print(f"  {library:9s} seed {seed}  step {step + 1:5d}  test NLL {mean:.4f}")
            model.train()
            eval_seconds += time.perf_counter() - eval_start
    train_wall = time.perf_counter() - wall_start - eval_seconds

    nll, nll_stderr, nll_error = test_nll(model, test)
    if schedule.eval_every:
        nll_curve.append({"step": steps, "test_nll": test_nll(model, test[:EVAL_CHUNK])[0]})
    if schedule.screen:
        print(
            f"  {library:9s} seed {seed}  test NLL {nll:.4f} +- {nll_stderr:.4f}"
            f"  train {train_wall:.1f} s",
            flush=True,
        )
        return {
            "library": library,
            "seed": seed,
            "steps": steps,
            "test_nll": nll,
            "test_nll_stderr": nll_stderr,
            "test_nll_error": nll_error,
            "train_wall_s": train_wall,
            "curve": curve,
            "test_nll_curve": nll_curve,
        }
    log_prob_s, _ = median_time(lambda: log_prob_pass(model, test), TIMING_REPEATS)
    sample_s, samples = median_time(lambda: draw(model, SAMPLE_SIZE), TIMING_REPEATS)
    z = torch.randn(SAMPLE_SIZE, 2, generator=torch.Generator().manual_seed(seed))
    timed = step_times[WARMUP_STEPS:] if steps > 2 * WARMUP_STEPS else step_times
    result = {
        "library": library,
        "seed": seed,
        "steps": steps,
        "parameters": count_parameters(model),
        "test_nll": nll,
        "test_nll_stderr": nll_stderr,
        "test_nll_error": nll_error,
        "log_prob_exact": True,
        "final_running_loss": curve[-1]["running_loss"],
        "loss_finite": all(math.isfinite(v) for v in losses),
        "median_step_ms": 1e3 * statistics.median(timed),
        "mean_step_ms": 1e3 * statistics.fmean(timed),
        "p10_step_ms": 1e3 * statistics.quantiles(timed, n=10)[0],
        "p90_step_ms": 1e3 * statistics.quantiles(timed, n=10)[-1],
        "warmup_s": sum(step_times[:WARMUP_STEPS]),
        "train_wall_s": train_wall,
        "log_prob_ms": 1e3 * log_prob_s,
        "sample_ms": 1e3 * sample_s,
        "samples_finite": bool(torch.isfinite(samples).all()),
        "roundtrip_max_err": roundtrip_error(model, z),
        "curve": curve,
        "test_nll_curve": nll_curve,
    }
    if library == "flowforge":
        with model.inversion_tol(LOOSE_TOL):
            result["sample_loose_ms"] = (
                1e3 * median_time(lambda: draw(model, SAMPLE_SIZE), TIMING_REPEATS)[0]
            )
            result["roundtrip_loose_max_err"] = roundtrip_error(model, z)
    print(
        f"  {library:9s} seed {seed}  test NLL {nll:.4f} +- {nll_stderr:.4f}"
        f"  step {result['median_step_ms']:.2f} ms  train {train_wall:.1f} s"
        f"  log_prob {result['log_prob_ms']:.0f} ms  sample {result['sample_ms']:.0f} ms"
        f"  round trip {result['roundtrip_max_err']:.1e}"
    )
    sys.stdout.flush()
    return result


def step_timing(
    batch: Tensor, rounds: int, steps: int, lr: float, arch: Architecture
) -> dict[str, Any]:
    """Median training-step time per library, measured round-robin: ``rounds`` rounds, each
    timing ``steps`` steps of every library in turn on fresh models and the same ``batch``,
    so that slow spells of a shared machine and the order of the runs hit both alike."""
    trainers = {}
    for lib in LIBRARIES:
        model = build_model(lib, arch, 0)
        model.train()
        trainers[lib] = (model, torch.optim.Adam(model.parameters(), lr=lr))
    times: dict[str, list[float]] = {lib: [] for lib in LIBRARIES}
    for r in range(rounds + 1):  # round 0 warms up
        for lib, (model, optimizer) in trainers.items():
            for _ in range(steps):
                start = time.perf_counter()
                train_step(model, optimizer, batch)
                if r:
                    times[lib].append(time.perf_counter() - start)
    medians = {lib: 1e3 * statistics.median(t) for lib, t in times.items()}
    ratio = medians["flowforge"] / medians["normflows"]
    print(
        "  round-robin step medians (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
        + f"; flowforge/normflows {ratio:.3f}",
        flush=True,
    )
    return {"rounds": rounds, "steps_per_round": steps, "median_step_ms": medians, "ratio": ratio}


def summarize(runs: list[dict[str, Any]], timing: dict[str, Any]) -> dict[str, Any]:
    """Per-library medians over seeds, flowforge/normflows ratios and the pass/fail verdicts."""
    keys = (
        "test_nll",
        "test_nll_stderr",
        "median_step_ms",
        "train_wall_s",
        "log_prob_ms",
        "sample_ms",
        "roundtrip_max_err",
    )
    per_lib = {
        lib: {k: statistics.median(r[k] for r in runs if r["library"] == lib) for k in keys}
        for lib in LIBRARIES
    }
    per_lib["flowforge"]["sample_loose_ms"] = statistics.median(
        r["sample_loose_ms"] for r in runs if r["library"] == "flowforge"
    )
    for lib in LIBRARIES:
        per_lib[lib]["round_robin_step_ms"] = timing["median_step_ms"][lib]
    ours, theirs = per_lib["flowforge"], per_lib["normflows"]
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["library"], r["seed"]): r for r in runs}
    step_ratios = [
        by["flowforge", s]["median_step_ms"] / by["normflows", s]["median_step_ms"] for s in seeds
    ]
    nll_diffs = [by["flowforge", s]["test_nll"] - by["normflows", s]["test_nll"] for s in seeds]
    return {
        "per_library": per_lib,
        "step_time_ratio": ours["median_step_ms"] / theirs["median_step_ms"],
        "step_time_ratio_per_seed": step_ratios,
        "round_robin_step_time_ratio": timing["ratio"],
        "sample_time_ratio": ours["sample_ms"] / theirs["sample_ms"],
        "sample_loose_time_ratio": ours["sample_loose_ms"] / theirs["sample_ms"],
        "log_prob_time_ratio": ours["log_prob_ms"] / theirs["log_prob_ms"],
        "nll_difference": ours["test_nll"] - theirs["test_nll"],
        "nll_difference_per_seed": nll_diffs,
        "entropy_floor": ff.data.CHECKERBOARD_ENTROPY,
        "flowforge_nll_not_worse": ours["test_nll"] <= theirs["test_nll"],
        "flowforge_step_not_slower": ours["median_step_ms"] <= theirs["median_step_ms"]
        and timing["ratio"] <= 1.0,
    }


def markdown_table(summary: dict[str, Any], sample_size: int) -> str:
    """The summary as a Markdown table (medians over seeds) with ratio lines below."""
    rows = [
        "| library | test NLL (nats) | step (ms) | round-robin step (ms) | train wall (s)"
        f" | log_prob test (ms) | sample {sample_size} (ms) | round-trip error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lib, m in summary["per_library"].items():
        rows.append(
            f"| {lib} | {m['test_nll']:.4f} ± {m['test_nll_stderr']:.4f}"
            f" | {m['median_step_ms']:.2f} | {m['round_robin_step_ms']:.2f}"
            f" | {m['train_wall_s']:.1f} | {m['log_prob_ms']:.0f} | {m['sample_ms']:.0f}"
            f" | {m['roundtrip_max_err']:.1e} |"
        )
    per_seed = ", ".join(f"{r:.3f}" for r in summary["step_time_ratio_per_seed"])
    nll_seed = ", ".join(f"{d:+.4f}" for d in summary["nll_difference_per_seed"])
    loose = summary["per_library"]["flowforge"]["sample_loose_ms"]
    rows += [
        "",
        f"- step time flowforge/normflows: {summary['step_time_ratio']:.3f}"
        f" (per seed: {per_seed}); round-robin: {summary['round_robin_step_time_ratio']:.3f}",
        f"- log_prob time flowforge/normflows: {summary['log_prob_time_ratio']:.3f}",
        f"- sample time flowforge/normflows: {summary['sample_time_ratio']:.3f}"
        f" (flowforge at tol {LOOSE_TOL:.1e}: {loose:.0f} ms,"
        f" ratio {summary['sample_loose_time_ratio']:.3f})",
        f"- test NLL flowforge - normflows: {summary['nll_difference']:+.4f} nats"
        f" (per seed: {nll_seed}; floor ln 32 = {summary['entropy_floor']:.4f})",
        f"- flowforge NLL not worse than normflows: {summary['flowforge_nll_not_worse']}",
        f"- flowforge step not slower than normflows (per-run and round-robin medians):"
        f" {summary['flowforge_step_not_slower']}",
    ]
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides the budget for a smoke test."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1500, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam (peak) learning rate")
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="constant lr, or flowforge's trainer schedule (warm-up, cosine decay to lr/100)",
    )
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps of --schedule cosine")
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help=f"steps between test NLLs on {EVAL_CHUNK:,} test points (0: only at the end);"
        " with it, a PNG of the curves is written beside the JSON",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--test-size", type=int, default=20_000)
    p.add_argument("--blocks", type=int, default=8, help="residual blocks")
    p.add_argument("--hidden", default="128,128", help="hidden sizes of each branch")
    p.add_argument("--coeff", type=float, default=0.97, help="Lipschitz bound of each branch")
    p.add_argument(
        "--exact-terms",
        type=int,
        default=2,
        help="series terms always computed (flowforge's n_exact_terms; normflows' is one less)",
    )
    p.add_argument("--p", type=float, default=0.5, help="geometric roulette parameter")
    p.add_argument(
        "--power-iterations", type=int, default=1, help="power-iteration steps per train step"
    )
    p.add_argument(
        "--probe",
        choices=("rademacher", "gaussian"),
        default="rademacher",
        help="flowforge's Hutchinson probe (normflows' is Gaussian)",
    )
    p.add_argument(
        "--normflows-mlp",
        action="store_true",
        help="use nf.nets.LipschitzMLP as shipped (its per-layer bound, zero-init last layer)",
    )
    p.add_argument(
        "--libraries",
        default=",".join(LIBRARIES),
        help="comma-separated libraries to run (screening one side)",
    )
    p.add_argument(
        "--screen",
        action="store_true",
        help="test NLLs only: no timing, no summary verdicts (for the variant experiments)",
    )
    p.add_argument(
        "--normflows-layer-coeff",
        type=float,
        default=None,
        help="normflows' Lipschitz bound per linear layer instead of the matched"
        " coeff ** (1 / layers) (normflows' example: 0.9)",
    )
    p.add_argument(
        "--ff-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword of flowforge's resflow recipe (VALUE a Python literal),"
        " e.g. --ff-option actnorm=False; repeatable",
    )
    p.add_argument(
        "--ff-last-scale",
        type=float,
        default=None,
        help="multiply the last linear layer of every flowforge branch by this at init",
    )
    p.add_argument(
        "--ff-normalize-init",
        action="store_true",
        help="start every flowforge spectral layer's raw weight at its normalised value",
    )
    p.add_argument("--rounds", type=int, default=8, help="round-robin timing rounds")
    p.add_argument("--round-steps", type=int, default=20, help="steps per library per round")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output (default benchmarks/results/resflow_vs_normflows.json,"
        " _quick with --quick, _screen with --screen)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 50 steps, 1 seed, 2,000 test points"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.test_size = 50, "0", 2_000
        args.rounds, args.round_steps = 2, 5
    if args.out is None:
        name = (
            "resflow_vs_normflows_quick.json"
            if args.quick
            else "resflow_vs_normflows_screen.json"
            if args.screen
            else "resflow_vs_normflows.json"
        )
        args.out = Path("benchmarks/results") / name
    if args.steps < 2 or args.batch_size < 2 or args.test_size < 2:
        p.error("--steps, --batch-size and --test-size must be >= 2")
    if args.blocks < 1 or args.exact_terms < 1 or args.power_iterations < 1:
        p.error("--blocks, --exact-terms and --power-iterations must be >= 1")
    if args.warmup < 0 or args.eval_every < 0:
        p.error("--warmup and --eval-every must be >= 0")
    if args.rounds < 1 or args.round_steps < 1:
        p.error("--rounds and --round-steps must be >= 1")
    if not 0 < args.coeff < 1 or not 0 < args.p < 1:
        p.error("--coeff and --p must be in (0, 1)")
    try:
        args.hidden_sizes = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    except ValueError:
        p.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
    if not args.hidden_sizes or min(args.hidden_sizes) < 1:
        p.error(f"--hidden must name at least one size >= 1, got {args.hidden!r}")
    args.library_list = tuple(lib for lib in args.libraries.split(",") if lib.strip())
    if not args.library_list or set(args.library_list) - set(LIBRARIES):
        p.error(f"--libraries must name some of {', '.join(LIBRARIES)}, got {args.libraries!r}")
    if not args.screen and args.library_list != LIBRARIES:
        p.error("--libraries other than both needs --screen (the summary compares both)")
    if args.normflows_layer_coeff is not None and not 0 < args.normflows_layer_coeff < 1:
        p.error("--normflows-layer-coeff must be in (0, 1)")
    options = []
    for item in args.ff_option:
        key, sep, value = item.partition("=")
        try:
            options.append((key.strip(), ast.literal_eval(value.strip())))
        except (ValueError, SyntaxError):
            sep = ""
        if not sep or not key.strip():
            p.error(f"--ff-option must be KEY=VALUE with a Python literal, got {item!r}")
    args.ff_options = tuple(options)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.seed_list:
        p.error("--seeds must name at least one seed")
    if {TEST_SEED, TIMING_SEED} & set(args.seed_list):
        p.error(f"seeds {TEST_SEED} and {TIMING_SEED} are reserved for the test and timing sets")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON report."""
    args = parse_args(argv)
    arch = Architecture(
        blocks=args.blocks,
        hidden=args.hidden_sizes,
        coeff=args.coeff,
        exact_terms=args.exact_terms,
        p=args.p,
        power_iterations=args.power_iterations,
        probe=args.probe,
        normflows_mlp=args.normflows_mlp,
        normflows_layer_coeff=args.normflows_layer_coeff,
        flowforge_options=args.ff_options,
        flowforge_last_scale=args.ff_last_scale,
        flowforge_normalize_init=args.ff_normalize_init,
    )
    test, load_start = prepare(args, f"normflows {nf.__version__}", TEST_SEED)
    print(
        f"{arch.blocks} blocks, hidden {arch.hidden}, Lip(g) <= {arch.coeff}"
        f" ({arch.layer_coeff:.5f} per layer), {arch.exact_terms} exact terms +"
        f" geometric({arch.p}), {arch.power_iterations} power iteration(s) per step,"
        f" flowforge probe {arch.probe}, normflows branch"
        f" {'LipschitzMLP' if arch.normflows_mlp else 'matched'}"
    )
    schedule = Schedule(
        args.lr, args.schedule == "cosine", args.warmup, args.eval_every, args.screen
    )
    bench_start = time.perf_counter()

    def run(library: str, seed: int, batches: Tensor) -> dict[str, Any]:
        return train_and_evaluate(library, seed, batches, test, schedule, arch)

    runs = interleaved_runs(args.seed_list, args.steps, args.batch_size, args.library_list, run)
    if args.screen:
        screen_report(args, arch, runs, load_start, bench_start)
        return
    print("round-robin step timing")
    timing_batch = ff.data.checkerboard(args.batch_size, seed=TIMING_SEED)
    timing = step_timing(timing_batch, args.rounds, args.round_steps, args.lr, arch)
    summary = summarize(runs, timing)
    table = markdown_table(summary, SAMPLE_SIZE)
    print()
    print(table)

    report = {
        "config": {
            **_budget(args),
            "lr_warmup_steps": args.warmup if args.schedule == "cosine" else 0,
            "eval_every": args.eval_every,
            "test_seed": TEST_SEED,
            **{
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(arch).items()
            },
            "layer_coeff": arch.layer_coeff,
            "normflows_n_exact_terms": arch.exact_terms - 1,
            "warmup_steps": WARMUP_STEPS,
            "eval_chunk": EVAL_CHUNK,
            "sample_size": SAMPLE_SIZE,
            "loose_tol": LOOSE_TOL,
            "timing_repeats": TIMING_REPEATS,
            "timing_seed": TIMING_SEED,
            "quick": args.quick,
        },
        "environment": environment({"normflows": nf.__version__}, load_start),
        "total_wall_s": time.perf_counter() - bench_start,
        "runs": runs,
        "round_robin": timing,
        "summary": summary,
        "markdown": table,
    }
    write_report(args.out, report)
    if args.eval_every:
        plot_curves(runs, args.out.with_suffix(".png"))


def _budget(args: argparse.Namespace) -> dict[str, Any]:
    """The training budget and evaluation size both reports record."""
    keys = ("steps", "batch_size", "lr", "schedule")
    return {
        **{k: getattr(args, k) for k in keys},
        "seeds": args.seed_list,
        "test_size": args.test_size,
    }


def screen_report(
    args: argparse.Namespace,
    arch: Architecture,
    runs: list[dict[str, Any]],
    load_start: tuple[float, ...],
    bench_start: float,
) -> None:
    """Print the median test NLL per library and write the runs as JSON (``--screen``)."""
    medians = {}
    for lib in args.library_list:
        nlls = [r["test_nll"] for r in runs if r["library"] == lib]
        medians[lib] = statistics.median(nlls)
        per_seed = ", ".join(f"{v:.4f}" for v in nlls)
        print(f"{lib}: median test NLL {medians[lib]:.4f} (per seed: {per_seed})")
    report = {
        "config": {
            **_budget(args),
            "layer_coeff": arch.layer_coeff,
            "normflows_layer_coeff": arch.normflows_coeff,
            "flowforge_options": dict(arch.flowforge_options),
            "flowforge_last_scale": arch.flowforge_last_scale,
            "flowforge_normalize_init": arch.flowforge_normalize_init,
            "input_activation": arch.input_activation,
            "normflows_mlp": arch.normflows_mlp,
            "blocks": arch.blocks,
            "hidden": list(arch.hidden),
            "coeff": arch.coeff,
        },
        "environment": environment({"normflows": nf.__version__}, load_start),
        "total_wall_s": time.perf_counter() - bench_start,
        "runs": runs,
        "median_test_nll": medians,
    }
    write_report(args.out, report)


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    """Test NLL against training step, one line per run, one colour per library."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    colours = dict(zip(LIBRARIES, ("tab:blue", "tab:orange"), strict=True))
    seeds = sorted({r["seed"] for r in runs})
    for r in runs:
        pts = r["test_nll_curve"]
        ax.plot(
            [p["step"] for p in pts],
            [p["test_nll"] for p in pts],
            marker=".",
            color=colours[r["library"]],
            ls=("-", "--", ":", "-.")[seeds.index(r["seed"]) % 4],
            alpha=0.8,
            label=f"{r['library']} seed {r['seed']}",
        )
    ax.axhline(ff.data.CHECKERBOARD_ENTROPY, color="black", ls=":", label="entropy (floor)")
    ax.set(xlabel="training step", ylabel=f"test NLL on {EVAL_CHUNK:,} points (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ff.viz.save_figure(fig, path)
    print(f"curves written to {path}")


if __name__ == "__main__":
    main()
