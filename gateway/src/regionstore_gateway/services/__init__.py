"""The gateway's decisions, apart from HTTP: customer reads and writes, and the regions."""
