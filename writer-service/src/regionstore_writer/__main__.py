"""Run the writer service: python -m regionstore_writer."""

from regionstore_writer.main import main

main()
