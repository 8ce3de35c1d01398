"""The trainer: loop, optimizer and schedule, distributed setup, validation."""
