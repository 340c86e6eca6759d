"""Inkwash: a local-first Stable Diffusion studio. The engine is in nodes/, the app in webui/."""
