"""Test oracles for regionstore: what the tests, the bench, chaos and the audit CLI check with."""
