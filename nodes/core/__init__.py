"""The core node classes, named and shaped as ComfyUI's."""
