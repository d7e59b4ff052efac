"""Command-line tools: ``flop-convert``, ``flop-report``, ``flop-compact``."""
