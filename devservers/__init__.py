"""Real servers on loopback for tests and benchmarks: PostgreSQL, Label Studio (not part of the product)."""
