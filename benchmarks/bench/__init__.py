"""`edge-ids bench`: the host side (host.py), what runs where the model runs (device.py, measure.py), the runtimes compared and the report."""
