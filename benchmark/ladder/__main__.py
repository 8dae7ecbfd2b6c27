"""``python -m benchmark.ladder [converged | twin] [options]`` (see ``benchmark/ladder/__init__.py``)."""
import sys
from typing import List, Optional


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
