"""The engine and everything that happens to leads: moves, batches, journal checks, tests, simulation."""
