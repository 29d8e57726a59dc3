"""Load, stress and capacity tests of the served model (make loadtest, make bench)."""
