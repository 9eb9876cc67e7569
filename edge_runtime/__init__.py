"""The device side: numpy and a TFLite interpreter only, nothing from train/ or compress/.

Data flows down this list; each sub-package imports only those above it (model reads the
site's incident settings from the bundle), and the daemon ties them together:

    ingest/     records in: stdin, files, follow:, Argus on an interface or a capture
    site/       who a flow belongs to, services, episodes, incidents, each device's normal
    model/      the bundle and what it runs: features, LiteRT, anomaly model, classifier, detector
    outputs/    alerts, metrics, the webhook and the operator's page
    watch.py    one batch through the detector and the devices' tracker
    daemon.py   `edge-ids run`: the loop, reloads, state, signals; systemd.py its notifications
"""
from .model.bundle import Bundle, BundleError, load_bundle
from .model.classifier import Classifier
from .model.detector import UNKNOWN, Detector

__all__ = ["Bundle", "BundleError", "Classifier", "Detector", "UNKNOWN", "load_bundle"]
