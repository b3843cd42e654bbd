"""Benchmarks of the local regionstore stack against the machine's own limits.

Run ``uv run python -m regionstore_bench`` (``--quick`` for the smoke-sized run), or
``make bench``; results land in ``bench/results/``.
"""
