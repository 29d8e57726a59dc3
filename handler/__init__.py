"""The request path of the served model, one module per concern: errors.py (replies and the one
error shape), records.py (the model's record schema), native.py (the JSON API with KServe v1),
v2.py and v2_binary.py (the Open Inference Protocol, JSON and the binary-data extension),
service.py (the batching core), typed_records.py, request_log.py and metrics.py (the handler's
metric lines); handler.py adds TorchServe, runtimes.py the forward (torch or ONNX Runtime) and
explanations.py integrated gradients.

The modules import one another relatively, as one package, in a checkout and in the model
archive alike: the archive holds this package as the folder handler/ beside its entry module,
torchserve_entry.py. Python 3.9 compatible: it runs in the serving image's worker.
"""
