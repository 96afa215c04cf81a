"""ravend: cross-domain networking for edge Kubernetes (Raven-compatible), one process per node."""

__version__ = "0.1.0"
