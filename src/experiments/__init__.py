"""Train, compare and sweep MLPs, CNNs and RNNs with Hydra and Lightning: `python -m experiments`."""
