"""`python -m experiments.evaluate` is `experiments evaluate`: commands/evaluate.py."""

from experiments.commands.evaluate import main

if __name__ == "__main__":
    main()
