"""Applications built from the library: whole jobs a user starts with one command (the demo)."""
