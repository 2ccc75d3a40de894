"""The `mesh` command line."""
