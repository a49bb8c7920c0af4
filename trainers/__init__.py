"""Command-line entry points (`python -m trainers.<name>`)."""

from mixem_tf.cli import quiet_native_logs

quiet_native_logs()
