"""`python -m paanet_fast ...` (and `torchrun -m paanet_fast ...`): the paanet-fast command line."""
import sys

from .cli import main

sys.exit(main())
