"""Demonstrations run by `mesh demo`."""
