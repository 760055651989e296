"""`python -m experiments.export` is `experiments export`: commands/export.py."""

from experiments.commands.export import main

if __name__ == "__main__":
    main()
