# The fast lane of the HTTP/1.1 readers (src/sidegate/http/_scan.c): whole plain heads in one call.
# Each returns None when the head is incomplete, unusual or invalid: the caller then uses llhttp.

def scan_request(
    data: bytes, start: int, max_head: int, max_fields: int
) -> tuple[int, bytes, bytes, bytes, bytes, list[tuple[bytes, bytes]]] | None: ...
def scan_response(
    data: bytes, start: int, max_head: int
) -> tuple[int, int, int, list[tuple[bytes, bytes]]] | None: ...
