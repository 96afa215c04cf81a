"""ravend.certs."""
