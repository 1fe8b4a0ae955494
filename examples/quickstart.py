"""Train every registered flow on the checkerboard and print a side-by-side table.

    python examples/quickstart.py            # about a minute on 2 CPU cores
    python examples/quickstart.py --steps 5000

Each model gets the same data stream, optimiser and number of steps; the table shows the test
negative log-likelihood in nats beside the entropy of the data, the floor no model can beat.
"""

from __future__ import annotations

import argparse
import time

import torch

import flowforge as ff


def train(name: str, steps: int, batch_size: int, seed: int) -> ff.Model:
    """Fit ``name`` to the checkerboard with Adam, printing progress every tenth of the run."""
    torch.manual_seed(seed)
    model = ff.models.create(name, dim=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        loss = model.loss(ff.data.checkerboard(batch_size, generator=generator))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(steps // 10, 1) == 0:
            print(f"  {name:8s} step {step:5d}/{steps}  loss {loss.item():.3f}", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--models", default=",".join(ff.models.available()))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    test = ff.data.checkerboard(20_000, seed=12345)
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        model = train(name, args.steps, args.batch_size, args.seed).eval()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            nll = -model.log_prob(test).mean().item()
            start = time.perf_counter()
            model.sample(10_000)
            sample_s = time.perf_counter() - start
        rows.append((name, nll, seconds, sample_s))

    print(f"\ncheckerboard, {args.steps} steps of batch {args.batch_size}")
    print(f"entropy (best possible test NLL): {ff.data.CHECKERBOARD_ENTROPY:.3f} nats\n")
    print("| model | test NLL (nats) | train time (s) | 10k samples (s) |")
    print("|---|---|---|---|")
    for name, nll, seconds, sample_s in rows:
        print(f"| {name} | {nll:.3f} | {seconds:.1f} | {sample_s:.3f} |")


if __name__ == "__main__":
    main()
