"""ravend.l3."""
