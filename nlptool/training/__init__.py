"""The training loop and what it owns: optimizer and schedule, precision, checkpoints, logging."""
