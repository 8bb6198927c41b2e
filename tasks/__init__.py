"""Celery task modules: thin adapters that decode arguments, call one library function and
map its errors to retry or drop."""
