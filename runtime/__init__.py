"""Processes and orchestration: config, broker adapter, breaker, main loop, watchdog."""
