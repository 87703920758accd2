"""Fleet: serve and manage open models on your own machines."""

__version__ = "0.2.0"
