"""The node-graph engine: declarations, validation, the executor (no torch), node classes and runtime."""
