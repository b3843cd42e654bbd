from regionstore_tools.cli import main

main()
