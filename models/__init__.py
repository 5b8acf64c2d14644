"""The shipped models, installed as the package ``edge.models`` (see pyproject.toml).

Each model sits beside its card (``<name>.card.json``: preprocessing, labels, metrics); the
runtime finds them through :func:`edge.paths.shipped_model`.
"""
