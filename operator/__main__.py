"""`python -m curation_operator`: run the operator (settings from THRESHER_* environment variables)."""

from __future__ import annotations

import argparse
import logging

import kopf

from curation_operator.settings import OperatorSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m curation_operator", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    args = parser.parse_args(argv)
    from curation_operator import handlers  # noqa: F401 - registers the handlers

    kopf.configure(verbose=args.verbose, quiet=args.quiet)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    settings = OperatorSettings()
    kopf.run(
        standalone=True,  # one replica (Deployment strategy Recreate): no peering needed
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint or None,
    )


if __name__ == "__main__":
    main()
