from regionstore_gateway.dataset.cli import main

raise SystemExit(main())
