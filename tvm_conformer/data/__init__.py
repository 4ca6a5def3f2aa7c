"""Synthetic voice-assistant corpus: sentences, espeak-ng speech, feature cache."""
