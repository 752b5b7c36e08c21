"""The `saleflow` command line."""
