"""The embedded broker: kombu's SQLAlchemy transport tuned for one SQLite file (`transport`).

Redis or RabbitMQ replace it by URL (``broker.url``); nothing else in MicroClaw knows which
broker runs.
"""
