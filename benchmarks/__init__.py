"""Latency, memory, size and accuracy-loss benchmarks, on the host or on a target (to come:
issue "Benchmarks on the host and on the target")."""
