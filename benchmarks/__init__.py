"""Performance measurements that print figures: python -m benchmarks.<name>."""
