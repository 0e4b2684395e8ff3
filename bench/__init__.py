"""Benchmarks (`make bench`): each script runs our path beside an anchor doing the same work."""
