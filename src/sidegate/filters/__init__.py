"""L2: route filters, registered by name. See :mod:`sidegate.filters.base` for the hooks."""
