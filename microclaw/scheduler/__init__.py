"""Scheduled tasks: schedule arithmetic (pure), the beat tick that claims due runs, and what
happens to a task after its run (`completion`)."""
