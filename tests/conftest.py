"""Shared pytest configuration.

The repository root is put on sys.path by ``pythonpath = ["."]`` in pyproject.toml, so
tests import the vector loader as ``vectors.loader``. Markers (``slow``, ``bench``) are
registered there too; the default run excludes ``slow``.
"""
