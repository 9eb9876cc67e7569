"""The device side: numpy and a TFLite interpreter only, nothing from train/ or compress/.

    bundle      load and verify a bundle (hashes, schema version, anomaly threshold)
    records     raw records (CSV lines) -> typed columns, bad lines rejected with a reason
    features    the feature spec applied with numpy
    classifier  records -> classes and scores through LiteRT
    anomaly     records -> anomaly scores (an autoencoder's reconstruction error)
    detector    both channels -> one verdict per record (a class, Unknown, or normal)
"""
from .bundle import Bundle, BundleError, load_bundle
from .classifier import Classifier
from .detector import UNKNOWN, Detector

__all__ = ["Bundle", "BundleError", "Classifier", "Detector", "UNKNOWN", "load_bundle"]
