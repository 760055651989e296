"""Pieces the nets share: activations by name, the true lengths of padded token rows, token embeddings."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def token_lengths(tokens: torch.Tensor, pad_index: int) -> torch.Tensor:
    """Number of real tokens per row of a right-padded batch (at least 1, so empty rows stay valid)."""
    return (tokens != pad_index).sum(dim=1).clamp(min=1)


def distinct_per_row(ids: torch.Tensor, pad_index: int) -> torch.Tensor:
    """Each row's ids sorted, with every repeat of an id replaced by padding: a review's distinct features."""
    ids = ids.sort(dim=1).values
    ids[:, 1:] = ids[:, 1:].masked_fill(ids[:, 1:] == ids[:, :-1], pad_index)
    return ids


@torch.no_grad()
def naive_bayes_log_ratios(
    ids_of, tokens: torch.Tensor, labels: torch.Tensor, rows: int, pad_index: int, device: torch.device
) -> torch.Tensor:
    """log(P(feature | positive) / P(feature | negative)) for each of `rows` features, counted over the
    training reviews (labels 0 and 1) with add-one smoothing (NBSVM, Wang & Manning 2012). `ids_of` turns a
    chunk of token rows into the feature ids to count, padding left out."""
    if labels.max() > 1:
        raise ValueError("naive-Bayes feature weights need two classes")
    counts = torch.ones(2, rows, device=device)
    chunk = 1024
    for start in range(0, len(labels), chunk):
        ids = ids_of(tokens[start : start + chunk].to(device))
        label = labels[start : start + chunk].to(device).view(-1, 1).expand_as(ids)
        real = ids != pad_index
        counts.view(-1).index_add_(0, label[real] * rows + ids[real], torch.ones_like(ids[real], dtype=counts.dtype))
    ratios = counts / counts.sum(dim=1, keepdim=True)
    return (ratios[1] / ratios[0]).log()


class TokenEmbedding(nn.Embedding):
    """Learned token embeddings for the sequence nets, optionally with one fixed channel more: each token's
    naive-Bayes log-count ratio over the training reviews (`naive_bayes`, two classes), a word's polarity
    counted over all of them, which a net trained from scratch would otherwise have to learn review by review.
    The ratios are set by `fit_to_training_data` before the first step and saved with the weights (an
    `nn.Embedding`, so the weights keep the names they had before this channel existed)."""

    def __init__(self, vocab_size: int, dim: int, pad_index: int, naive_bayes: bool = False) -> None:
        super().__init__(vocab_size, dim, padding_idx=pad_index)
        self.register_buffer("log_ratios", torch.zeros(vocab_size) if naive_bayes else None)
        self.dim = dim + naive_bayes

    def fit_to_training_data(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        pad = self.padding_idx
        distinct = lambda rows: distinct_per_row(rows.long(), pad)  # noqa: E731 - each word once per review
        ratios = naive_bayes_log_ratios(distinct, tokens, labels, self.num_embeddings, pad, self.weight.device)
        ratios[pad] = 0.0
        self.log_ratios.copy_(ratios)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, dim)."""
        embedded = super().forward(tokens)
        if self.log_ratios is None:
            return embedded
        return torch.cat([embedded, self.log_ratios[tokens].unsqueeze(2).to(embedded.dtype)], dim=2)
