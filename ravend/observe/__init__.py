"""Observability: Prometheus metrics, readiness and the health/metrics HTTP server."""
