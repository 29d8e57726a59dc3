"""Layer 1, data: read the source, check its quality, clean it and split it by time."""
