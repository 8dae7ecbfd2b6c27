"""``python -m benchmark.ladder [converged | twin] [options]`` (see ``benchmark/ladder/__init__.py``)."""
import os
import sys
from typing import List, Optional

if __package__ in (None, ""):  # run as ``python benchmark/ladder``: the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv: Optional[List[str]] = None) -> None:
    """Dispatch on the first argument: ``converged``, ``twin``, else the classic ladder's options."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["converged"]:
        from benchmark.ladder.converged import main as run
        args = args[1:]
    elif args[:1] == ["twin"]:
        from benchmark.ladder.twin import main as run
        args = args[1:]
    else:
        from benchmark.ladder.classic import main as run
    run(args)


if __name__ == "__main__":
    main()
