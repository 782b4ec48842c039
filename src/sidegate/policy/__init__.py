"""Pure, clock-injected policy rules: no I/O, the current time is always passed in."""
