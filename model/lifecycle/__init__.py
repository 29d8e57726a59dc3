"""Layer 5, lifecycle: the model in operation: the TorchServe launcher and container driver,
the registry and promotion, canary releases, the batch store, continuous training, scoring."""
