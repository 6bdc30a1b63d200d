import sys

from rrwatch.cli.main import main

sys.exit(main())
