"""The built-in filters: name -> the module that registers it on import.

A serving process imports only the modules of the filters its config uses (a minimal config loads
neither LMDB nor the cryptography library); the config checker and ``sidegate schema`` load all.
"""

from typing import Final

BUILTIN: Final = {
    "access": "sidegate.filters.access",
    "api_key": "sidegate.filters.api_key",
    "cache": "sidegate.filters.cache",
    "cors": "sidegate.filters.cors",
    "direct_response": "sidegate.filters.direct_response",
    "jwt": "sidegate.filters.jwt",
    "rate_limit": "sidegate.filters.rate_limit",
}
