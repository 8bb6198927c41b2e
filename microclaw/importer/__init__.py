"""Importers from other assistants."""
