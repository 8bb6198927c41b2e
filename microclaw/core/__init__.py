"""Policy: pure functions over plain data.

Triggers, formatting, senders, groups, timezones and IPC authorization.
"""
