"""The ``regionstore`` command line and the dataset tooling it loads data with."""
