"""The benchmark and profiling lab, outside the product: the capacity benchmark (make bench),
the serving experiments and the request profile on variants of the tuned settings, and the
model's own variants measured bare and served (make model-bench, make served-model-bench)."""
