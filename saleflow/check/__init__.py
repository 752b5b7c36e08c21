"""Static checks of a parsed flow and of its test blocks."""
