"""Integrations: the HTTP service, the Dask adapters and the scikit-learn estimator.

They score through :class:`vae_anomaly.deploy.scorer.Scorer`; only the estimator's ``fit`` reaches
into :mod:`vae_anomaly.training` (lazily, so importing it never imports torch).
"""
