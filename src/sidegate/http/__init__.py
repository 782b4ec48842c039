"""L0: HTTP/1.1 message vocabulary and strict framing rules. No I/O, no asyncio."""
