"""``python -m flowforge`` is the ``flowforge`` command."""

from flowforge.cli import entry_point

if __name__ == "__main__":
    entry_point()
