import sys

from launcher.node.task import main

sys.exit(main())
