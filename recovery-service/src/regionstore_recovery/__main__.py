"""Run the recovery service: python -m regionstore_recovery."""

from regionstore_recovery.main import main

main()
