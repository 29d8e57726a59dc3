"""The load-test gate of the served model: the traffic scenarios and their SLOs (make loadtest),
the malformed-input corpus and the load payloads."""
