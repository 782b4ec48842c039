"""L3: listeners, inbound connections, limits and timeouts. Only this layer touches client sockets."""
