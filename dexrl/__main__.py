from dexrl.cli import main

raise SystemExit(main())
