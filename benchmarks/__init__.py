"""Benchmarks: the compression study (`python -m edge_ids.benchmarks.compression`); latency and
memory on the host or on a target are to come (issue "Benchmarks on the host and on the
target")."""
