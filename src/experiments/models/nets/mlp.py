"""Multi-layer perceptron: flattened pixels, or the mean of token (and hashed bigram) embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.models.nets.blocks import make_activation


class BagOfEmbeddings(nn.Module):
    """fastText-style text encoder: the mean embedding of a review's tokens and, optionally, its bigrams.

    Bigrams are hashed into `bigram_buckets` extra rows of the same table, so word order within a pair
    counts without a bigram vocabulary; padding is left out of the mean.
    """

    def __init__(self, vocab_size: int, dim: int, pad_index: int, bigram_buckets: int = 0) -> None:
        super().__init__()
        self.vocab_size, self.pad_index, self.bigram_buckets = vocab_size, pad_index, bigram_buckets
        self.bag = nn.EmbeddingBag(vocab_size + bigram_buckets, dim, mode="mean", padding_idx=pad_index)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.bigram_buckets:
            first, second = tokens[:, :-1], tokens[:, 1:]
            bigrams = self.vocab_size + (first * 1_000_003 + second) % self.bigram_buckets
            is_pad = (first == self.pad_index) | (second == self.pad_index)
            tokens = torch.cat([tokens, bigrams.masked_fill(is_pad, self.pad_index)], dim=1)
        return self.bag(tokens)


class MLP(nn.Module):
    def __init__(
        self,
        spec: dict,
        width: int = 256,
        depth: int = 2,
        activation: str = "relu",
        dropout: float = 0.1,
        embedding_dim: int = 64,
        bigram_buckets: int = 0,
    ) -> None:
        super().__init__()
        if spec["kind"] == "image":
            self.encode: nn.Module = nn.Flatten()
            features = math.prod(spec["shape"])
        else:
            self.encode = BagOfEmbeddings(spec["vocab_size"], embedding_dim, spec["pad_index"], bigram_buckets)
            features = embedding_dim
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(features, width), make_activation(activation), nn.Dropout(dropout)]
            features = width
        layers.append(nn.Linear(features, spec["num_classes"]))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encode(x))
