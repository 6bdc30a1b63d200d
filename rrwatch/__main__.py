import sys

from rrwatch.cli import main

sys.exit(main())
