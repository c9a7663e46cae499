"""Prefect flows: when and in what order the DVC stages run."""
