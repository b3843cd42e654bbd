"""Run the gateway: python -m regionstore_gateway."""

from regionstore_gateway.main import main

main()
