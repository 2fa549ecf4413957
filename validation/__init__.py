"""Great Expectations suites and checkpoints for raw events, feature tables and training sets."""
