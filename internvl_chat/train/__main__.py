"""`python -m internvl_chat.train ARGS.json` (under torchrun, or one process without it)."""

import sys

from internvl_chat.train import main

sys.exit(main())
