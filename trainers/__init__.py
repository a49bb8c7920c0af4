"""Command-line entry points (`python -m trainers.<name>`).

TensorFlow's C++ INFO and WARNING lines are hidden unless TF_CPP_MIN_LOG_LEVEL is set.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
