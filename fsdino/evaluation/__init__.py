"""Turning (prediction, ground truth) pairs into the protocol's numbers; knows nothing of models or data."""
