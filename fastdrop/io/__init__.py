"""Model files, weight files and data sets."""
