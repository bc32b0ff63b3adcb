"""The pure core of meow: data, rules and wire format. No I/O lives here.

Both the daemon and the CLI import this package, and nothing else of each other.
"""
