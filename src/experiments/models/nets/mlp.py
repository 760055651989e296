"""Multi-layer perceptron: flattened pixels, or the mean of token (and hashed n-gram) embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.models.nets.blocks import make_activation


class BagOfEmbeddings(nn.Module):
    """fastText-style text encoder: the mean embedding of a review's tokens and of its n-grams up to `ngrams`.

    N-grams are hashed into `ngram_buckets` extra rows of the same table, so word order within a
    short window counts without an n-gram vocabulary; padding is left out of the mean. With `binary`,
    each distinct token or n-gram counts once per review, as in the NBSVM baselines.
    """

    def __init__(
        self, vocab_size: int, dim: int, pad_index: int, ngrams: int = 1, ngram_buckets: int = 0, binary: bool = False
    ) -> None:
        super().__init__()
        if ngrams > 1 and ngram_buckets < 1:
            raise ValueError("n-grams need hash buckets: set ngram_buckets > 0")
        self.vocab_size, self.pad_index = vocab_size, pad_index
        self.ngrams, self.ngram_buckets, self.binary = ngrams, ngram_buckets, binary
        self.bag = nn.EmbeddingBag(vocab_size + ngram_buckets, dim, mode="mean", padding_idx=pad_index)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pieces, hashed, is_pad = [tokens], tokens.long(), tokens == self.pad_index
        for n in range(2, self.ngrams + 1):
            following = tokens[:, n - 1 :]
            hashed = hashed[:, :-1] * 1_000_003 + following  # wraps around in int64: still a fine hash
            is_pad = is_pad[:, :-1] | (following == self.pad_index)
            ngram_ids = self.vocab_size + hashed % self.ngram_buckets
            pieces.append(ngram_ids.masked_fill(is_pad, self.pad_index))
        ids = torch.cat(pieces, dim=1)
        if self.binary:  # sorted, a repeat sits next to its first occurrence: blank it out as padding
            ids = ids.sort(dim=1).values
            ids[:, 1:] = ids[:, 1:].masked_fill(ids[:, 1:] == ids[:, :-1], self.pad_index)
        return self.bag(ids)


class MLP(nn.Module):
    def __init__(
        self,
        spec: dict,
        width: int = 256,
        depth: int = 2,
        activation: str = "relu",
        dropout: float = 0.1,
        embedding_dim: int = 64,
        ngrams: int = 1,
        ngram_buckets: int = 0,
        binary: bool = False,
    ) -> None:
        super().__init__()
        if spec["kind"] == "image":
            self.encode: nn.Module = nn.Flatten()
            features = math.prod(spec["shape"])
        else:
            vocab_size, pad_index = spec["vocab_size"], spec["pad_index"]
            self.encode = BagOfEmbeddings(vocab_size, embedding_dim, pad_index, ngrams, ngram_buckets, binary)
            features = embedding_dim
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(features, width), make_activation(activation), nn.Dropout(dropout)]
            features = width
        layers.append(nn.Linear(features, spec["num_classes"]))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encode(x))
