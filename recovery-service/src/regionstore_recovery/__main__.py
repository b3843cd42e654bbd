from regionstore_recovery.main import main

main()
