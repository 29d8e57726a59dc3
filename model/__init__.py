"""mymodel: predict before departure whether a flight from New York arrives late."""

import logging


def configure_logging(verbose: bool = False) -> None:
    """One log format for every command-line job; --verbose shows debug lines."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
