"""Scheduled tasks: schedule arithmetic (pure) and the beat tick that claims due runs."""
