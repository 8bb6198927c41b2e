"""The durable path of one message."""
