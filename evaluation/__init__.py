"""Retrieval and answer evaluation, tuning, reports and benchmarks."""

import assistant  # noqa: F401  (its thread settings must come before numpy is imported)
