"""ravend.sim."""
