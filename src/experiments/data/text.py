"""Texts -> padded token ids, shared by every text dataset (IMDB, a CSV of one's own): one tokeniser, a
vocabulary of the training part's most frequent tokens, and splits encoded with it.

A change to what these functions return changes every text cache: bump the CACHE_FORMAT of each text dataset.
"""

from __future__ import annotations

import re
from collections import Counter

import torch

PAD, UNKNOWN = 0, 1

# A regular expression of our own rather than a tokenizer library: reviews need lower-casing, the
# <br /> tags dropped and words split from punctuation, which is one line and no extra dependency.
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("<br />", " "))


def build_vocabulary(token_lists: list[list[str]], size: int, min_freq: int) -> list[str]:
    counts = Counter(token for tokens in token_lists for token in tokens)
    common = [token for token, count in counts.most_common(size - 2) if count >= min_freq]
    return ["<pad>", "<unk>", *common]


def encode(token_lists: list[list[str]], vocabulary: list[str], seq_len: int) -> torch.Tensor:
    """Token ids, truncated to the first `seq_len` tokens and right-padded with PAD."""
    index = {token: i for i, token in enumerate(vocabulary)}
    ids = torch.full((len(token_lists), seq_len), PAD, dtype=torch.int32)
    for row, tokens in enumerate(token_lists):
        encoded = [index.get(token, UNKNOWN) for token in tokens[:seq_len]]
        ids[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.int32)
    return ids


def encode_splits(
    texts: dict[str, list[str]], labels: dict[str, list[int]], vocab_size: int, min_freq: int, seq_len: int
) -> dict:
    """{"vocabulary", "splits": {name: (token ids, labels)}} for the named splits of texts; the vocabulary comes
    from the "train" split alone, so that nothing of the validation or test texts leaks into training."""
    tokens = {name: [tokenize(text) for text in split] for name, split in texts.items()}
    vocabulary = build_vocabulary(tokens["train"], vocab_size, min_freq)
    splits = {name: (encode(tokens[name], vocabulary, seq_len), torch.tensor(labels[name])) for name in tokens}
    return {"vocabulary": vocabulary, "splits": splits}
