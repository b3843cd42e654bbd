from regionstore_gateway.main import main

main()
