from regionstore_replicator.main import main

main()
