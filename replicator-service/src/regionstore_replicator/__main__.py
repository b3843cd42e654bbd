"""Run the replicator service: python -m regionstore_replicator."""

from regionstore_replicator.main import main

main()
