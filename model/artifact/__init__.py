"""Layer 3, artifact: the served model.pt and schema.json, the TorchServe archive, offline
scoring with the same model.pt. With training/network.py, the Python 3.9 part the images run."""
