"""Serving the model beyond TorchServe: model.onnx in ONNX Runtime behind the project's own contract."""
