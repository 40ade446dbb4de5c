"""``python -m plaque.baselines.nnunet``: see `plaque.baselines.nnunet.run`."""

import sys

from plaque.baselines.nnunet.run import main

if __name__ == "__main__":
    sys.exit(main())
