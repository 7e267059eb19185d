import sys

from peropix_tui.cli import main

sys.exit(main())
