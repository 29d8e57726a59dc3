"""What the tests, the load-test gate (loadtest/) and the benchmarks (benchmarks/) use to start
real servers: TorchServe the way the image runs it (torchserve.py) and the images themselves
under podman or docker (container.py). The product (model/, handler/, serving/) never imports it."""
