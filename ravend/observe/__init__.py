"""ravend.observe."""
