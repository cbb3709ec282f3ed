"""Benchmarks (not tests).  Run ``python -m bench``; see README."""
