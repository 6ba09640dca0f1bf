from datacache_operator.cli import main

raise SystemExit(main())
