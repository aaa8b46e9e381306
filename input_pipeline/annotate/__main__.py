"""`python -m input_pipeline.annotate`: see `cli.py`."""
import sys

from input_pipeline.annotate import cli

sys.exit(cli.main())
