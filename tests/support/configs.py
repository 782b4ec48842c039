"""Config texts shared by the tests."""

# One upstream and the route to it: the rest of a config whose test is about another section.
UPSTREAM_AND_ROUTE = """\
upstreams:
  app: {endpoints: ["127.0.0.1:3000"]}
routes:
  - name: all
    match: {path_prefix: "/"}
    upstream: app
"""

# The contract of DESIGN.md: this file must always work (automated acceptance checks use its shape).
MINIMAL = (
    """\
listeners:
  inbound: {address: "127.0.0.1:8080"}
  admin:   {address: "127.0.0.1:9901"}
"""
    + UPSTREAM_AND_ROUTE
)


def minimal(inbound: str = "127.0.0.1:8080", admin: str = "127.0.0.1:9901") -> str:
    """The minimal config on other listener addresses."""
    return MINIMAL.replace("127.0.0.1:8080", inbound).replace("127.0.0.1:9901", admin)
