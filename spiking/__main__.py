"""``python -m spiking`` (and ``torchrun -m spiking train ...``) runs the ``spiking`` command."""

import sys

from spiking.cli import main

if __name__ == "__main__":
    sys.exit(main())
