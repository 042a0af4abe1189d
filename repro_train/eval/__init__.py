"""Evaluation: overthinking detectors (`detectors.py`), metrics (`metrics.py`), plots."""
