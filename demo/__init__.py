"""The bundled demo models: a procedurally generated world, the scripts that train a small SD family on it, and the evaluation that measures what it can do."""
