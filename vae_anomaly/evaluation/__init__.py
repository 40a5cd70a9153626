"""Evaluation: labelled datasets, the benchmark against other detectors, the demo and the report."""
