"""The REST API and its Python client."""
