"""Benchmarks of the model itself, outside the product package (the capacity lab is loadtest/)."""
