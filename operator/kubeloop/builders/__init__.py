"""Pure functions that build the child objects of the four kinds: spec in, manifest dict out, no I/O."""
