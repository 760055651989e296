"""A user's own package: a net and a data module that `experiments` trains without being edited."""
