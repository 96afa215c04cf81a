"""ravend.l7proxy."""
