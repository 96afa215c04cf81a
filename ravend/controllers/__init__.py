"""ravend.controllers."""
