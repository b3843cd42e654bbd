"""Benchmarks of the local regionstore stack against the machine's own limits.

Run ``python -m regionstore_bench`` (``--quick`` for the smoke-sized run) with ``bench/`` on
``PYTHONPATH``; results land in ``bench/results/``.
"""
