from rgdiff.cli.app import main

raise SystemExit(main())
