"""The device side: numpy and a TFLite interpreter only, nothing from train/ or compress/.

    bundle      load and verify a bundle (hashes, schema version)
    records     raw records (CSV lines) -> typed columns, bad lines rejected with a reason
    features    the feature spec applied with numpy
    classifier  records -> classes and scores through LiteRT
"""
from .bundle import Bundle, BundleError, load_bundle
from .classifier import Classifier

__all__ = ["Bundle", "BundleError", "Classifier", "load_bundle"]
