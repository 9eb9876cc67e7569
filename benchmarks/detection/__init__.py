"""The detection studies: the hybrid detector (hybrid*.py), incidents per device (incident*.py), live capture (capture.py), the network-only model (network_only.py)."""
