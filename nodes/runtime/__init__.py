"""The model runtime: torch and diffusers live here and below.

Inkwash never reaches a model hub at run time; these are set before diffusers or transformers load.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
