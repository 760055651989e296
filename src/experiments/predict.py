"""`python -m experiments.predict` is `experiments predict`: commands/predict.py."""

from experiments.commands.predict import main

if __name__ == "__main__":
    main()
