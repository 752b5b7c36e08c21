"""The flow language: the only package that knows Lark."""
