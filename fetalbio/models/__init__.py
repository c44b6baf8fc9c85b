"""Model builders, one per file. Importing this package imports Keras."""
