"""meow: the command-line client of meowd."""
