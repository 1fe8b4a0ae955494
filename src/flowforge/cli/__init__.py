"""The ``flowforge`` command: thin, options in, library calls out.

Every subcommand maps flags (or a TOML file) onto library calls. A user's mistake (an unknown
model or dataset, a bad file or option value, a missing run directory) prints one line saying
what is wrong and exits with status 2; ``FLOWFORGE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..train.checkpoint import CheckpointError
from ..train.loop import TrainingDiverged, TrainingInterrupted
from . import commands

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, CheckpointError)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and the hint to ask for ``--help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flowforge",
        description="Train, sample, evaluate and compare flow-based generative models.",
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"flowforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in commands.SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TrainingDiverged as e:
        print(f"flowforge {args.command}: {e}", file=sys.stderr)
        return 1
    except USER_ERRORS as e:
        if os.environ.get("FLOWFORGE_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, FileNotFoundError) and e.filename and e.filename not in message:
            message = f"{message}: {e.filename}"
        print(f"flowforge {args.command}: error: {message}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(_interrupted(args, e), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"flowforge {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        from ..train.distributed import teardown

        teardown()


def _interrupted(args: argparse.Namespace, e: TrainingInterrupted) -> str:
    """One line: the step saved and the command that resumes it."""
    import shlex

    if e.run_dir is None:
        return f"interrupted at step {e.step}; nothing was saved"
    if args.command != "train":
        return f"interrupted at step {e.step}; its checkpoint is saved in {e.run_dir}"
    run = shlex.quote(str(args.resume or args.out or e.run_dir))
    return (
        f"interrupted at step {e.step}; the checkpoint is saved \u2014 resume with: "
        f"flowforge train --resume {run}"
    )


def entry_point() -> None:
    """Console-script entry: ``flowforge ...``."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`flowforge models | head`): stop quietly, as Unix tools do.
        # stdout is pointed at devnull so that Python's own flush at exit raises nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
    sys.exit(code)
