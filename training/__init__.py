"""Pipelines that produce the shipped models (needs the ``train`` extra)."""
