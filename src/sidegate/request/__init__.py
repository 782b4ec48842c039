"""L4: the request layer: one request from routed head to last response byte, whatever protocol carried it."""
