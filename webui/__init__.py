"""The application: CLI, and the doors (UI, APIs) into the executor."""
