"""What the coordinating centre runs: the first prior, aggregation, the registry and its gate."""
