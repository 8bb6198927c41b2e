"""Importers from other assistants' installs: `nanoclaw` (a NanoClaw v1 store and its group
folders, idempotently, for ``microclaw import-nanoclaw``)."""
