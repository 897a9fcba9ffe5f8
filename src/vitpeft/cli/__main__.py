import sys

from vitpeft.cli import main

sys.exit(main())
