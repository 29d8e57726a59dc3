"""mymodel: a tabular model from data to a served, monitored TorchServe model.

The package's layers follow the data flow, each importing only the ones before it
(model/layers.py holds the order and a test enforces it):
data -> training -> artifact -> analysis -> lifecycle. This module and model/config.py
sit below them all.
"""

import logging


def configure_logging(verbose: bool = False) -> None:
    """One log format for every command-line job; --verbose shows debug lines."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
