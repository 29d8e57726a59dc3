"""What TorchServe imports from the model archive: a module at the archive's top, beside the
handler package, defining the one handler class TorchServe serves (TorchServe takes the module's
own classes, so the handler is named here, not imported under its own name).
Python 3.9 compatible: it runs in the serving image's worker.
"""

from handler.handler import PredictionHandler


class ServedHandler(PredictionHandler):
    """handler.handler.PredictionHandler, unchanged."""
