"""The deploy side: read a model file and score with numpy and onnxruntime alone.

No module here imports torch or :mod:`vae_anomaly.training` (tests/test_layout.py checks both).
"""
