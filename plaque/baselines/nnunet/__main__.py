"""``python -m plaque.baselines.nnunet``: see `plaque.baselines.nnunet.run`."""

import sys

from plaque.baselines.nnunet.run import main

sys.exit(main())
