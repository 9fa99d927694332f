"""`python -m cola_diffusers.cli`, the same as `cola-diffusers`."""

import sys

from . import main


sys.exit(main())
