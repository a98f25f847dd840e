"""The ``portacnn`` command: train, evaluate, predict, explain, export, info.

Every failure a user can cause (bad flags, bad files, a missing GPU, bad environment variables, running
out of memory) ends with one line on stderr and exit code 2; a diverged training run exits 1; Ctrl-C saves
a checkpoint and exits 130, SIGTERM does the same and exits 143 (a second signal stops at once). With
``--json`` the last line of stdout is one JSON object.

``mpiexec -n K portacnn train ...`` trains data-parallel over MPI (:mod:`portacnn.distributed`): rank 0 alone
claims the output folder, writes files and prints; the other ranks train silently, and every rank exits with the
same code.

The commands live in :mod:`.train` (its recipe in :mod:`portacnn.recipe`), :mod:`.commands` and :mod:`.explain`, the
parser in :mod:`.parser`.
"""

from __future__ import annotations

import sys
import time  # noqa: F401  (portacnn.cli.time: the clock that names default run folders, for tests)

from .. import distributed, kernels
from ..backend import BackendUnavailableError, check_environment
from ..data import limits
from .commands import cmd_evaluate, cmd_export, cmd_info, cmd_predict
from .common import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .explain import cmd_explain
from .parser import build_parser
from .train import _out_folder, cmd_train

__all__ = ["COMMANDS", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_USAGE", "UsageError", "_out_folder", "build_parser",
           "main"]

COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "explain": cmd_explain,
            "export": cmd_export, "info": cmd_info}


def main(argv=None) -> int:
    # under mpiexec only rank 0 prints errors: the ranks fail alike (one line in all), or learn of another's failure
    say = print if distributed.launched_rank() == 0 else (lambda *a, **k: None)

    def parse():
        check_environment()
        kernels.check_environment()
        limits.check_environment()
        try:
            return build_parser().parse_args(argv)
        except SystemExit as e:  # --help or --version: printed; the command ends there, with argparse's code (0)
            return int(e.code or 0)

    try:
        comm = distributed.auto_comm(strict=True)
        # under MPI every rank parses, and a refusal on one (its own flags, its environment) stops them all
        args = parse() if comm is None else distributed.agree(comm, parse)
        if isinstance(args, int):
            return args
        return COMMANDS[args.command](args)
    except UsageError as e:
        say(f"portacnn: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except distributed.RankFailed as e:  # another MPI rank failed (out of memory, a file it could not write)
        say(f"portacnn: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, BackendUnavailableError, OSError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, OSError) and e.filename and e.strerror:
            message = f"{e.filename}: {e.strerror}"
        say(f"portacnn: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        say("portacnn: error: out of memory; use a smaller --batch-size or --limit, or a machine with more memory",
            file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # a second Ctrl-C / SIGTERM during training, or Ctrl-C elsewhere
        signum = getattr(e, "signum", 2)
        say("portacnn: " + ("terminated" if signum == 15 else "interrupted"), file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
