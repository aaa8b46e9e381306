"""The one exception type for bad input data.

Raised with a message that names the offending file or directory and the problem,
so that `launch.py` can print it as is instead of a traceback from inside a library.
"""


class DataError(ValueError):
  """Bad or missing input data: the message names the file and what is wrong."""
