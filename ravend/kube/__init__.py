"""ravend.kube."""
