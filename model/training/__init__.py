"""Layer 2, training: the network and its preprocessing fitted on the training months, the
metrics and the one threshold rule, experiment tracking. Imports only the data layer."""
