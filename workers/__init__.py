"""Process roles: per-process context, beat's database scheduler, heartbeats, queue names."""
