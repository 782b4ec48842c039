# Bytes on the wire in C (src/sidegate/http/_wire.c). The scans return None when the head is
# incomplete, unusual or invalid: the caller then uses llhttp.

def scan_request(
    data: bytes, start: int, max_head: int, max_fields: int
) -> tuple[int, bytes, bytes, bytes, bytes, int, list[tuple[bytes, bytes]]] | None: ...
def scan_response(
    data: bytes, start: int, max_head: int
) -> tuple[int, int, int, list[tuple[bytes, bytes]]] | None: ...
def join_head(lead: list[bytes], fields: list[tuple[bytes, bytes]], trail: list[bytes]) -> bytes: ...
