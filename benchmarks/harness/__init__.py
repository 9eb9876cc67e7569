"""The daemon harness: `edge-ids run` as its own process, measured end to end (daemon.py), under a flood (flood.py) and at length (soak.py)."""
