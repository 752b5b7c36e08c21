"""The flow as frozen dataclasses, its move graph, its text and its identity."""
