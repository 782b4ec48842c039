"""L3: connections to the app, keep-alive pools per endpoint, clusters of endpoints."""
