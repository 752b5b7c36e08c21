"""Facts about one lead, and the evaluation and explanation of flow expressions."""
