from regionstore_writer.main import main

main()
