"""Command-line shim wiring the Ember packages together (``ember`` console script)."""
