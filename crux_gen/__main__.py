"""``python -m crux_gen``: the ``crux-gen`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
