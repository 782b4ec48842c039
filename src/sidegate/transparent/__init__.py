"""Transparent mode's set-up side: the nat rules an init container installs (``sidegate iptables``)."""
