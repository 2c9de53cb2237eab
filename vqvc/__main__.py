import sys

from vqvc.cli import main

sys.exit(main())
