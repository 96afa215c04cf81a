"""ravend.election."""
