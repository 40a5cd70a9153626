"""The training side: the only modules that import torch (extra ``[train]``).

Imports go one way: training uses :mod:`vae_anomaly.deploy` (file reading, validation,
calibration, the model-file format), never the reverse. Importing this package itself imports
nothing; :mod:`vae_anomaly.training.config` is torch-free so that option checks run without torch.
"""
