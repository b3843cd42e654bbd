"""Tests that need deploy/compose.yaml running in Docker (make test-compose runs them)."""
