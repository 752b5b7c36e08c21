"""saleflow: a declarative workflow engine for B2B sales processes."""

__version__ = "0.1.0"
