"""Correctness on real data: the project's results against a reference computed another way."""
