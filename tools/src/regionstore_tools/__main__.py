"""Run the operator CLI: python -m regionstore_tools."""

from regionstore_tools.cli import main

main()
