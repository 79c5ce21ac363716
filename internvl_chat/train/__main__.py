"""`python -m internvl_chat.train ARGS.json` (under torchrun, or one process without it)."""

import os
import sys

from internvl_chat.train import main
from internvl_chat.train.stop import EXIT_REQUEUE

code = main()
if code == EXIT_REQUEUE:
    # Everything is saved and closed. Leave at once, without the interpreter's slow teardown:
    # torchrun stops the other ranks as soon as one exits, which would turn their 75 into a
    # SIGTERM.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
