"""The bundle and what it runs: loading and trust, the feature spec with numpy, LiteRT, the anomaly model, the classifier and the detector."""
