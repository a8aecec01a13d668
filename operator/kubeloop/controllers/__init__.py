"""The kopf operator: one thin controller module per kind; main is the entry point."""
