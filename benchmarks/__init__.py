"""Benchmarks of chute against the usual ways of streaming records from FastAPI (see benchmarks/README.md)."""
