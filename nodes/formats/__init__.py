"""Torch-free formats that the engine and the web layer share: PNG metadata and infotext, A1111's
prompt syntax, and sampler / scheduler name tables."""
