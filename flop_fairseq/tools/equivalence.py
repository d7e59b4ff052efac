"""Checking that two language models compute the same function."""

import torch


@torch.no_grad()
def max_logprob_difference(a, b, num_words: int, length: int = 32, seed: int = 0) -> float:
    """Largest ``|log p_a - log p_b|`` over a random batch of 2 x ``length`` tokens (ids from 4 up,
    past fairseq's special symbols), both fairseq models in eval mode."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, num_words, (2, length), generator=g)
    out = []
    for m in (a, b):
        m.eval()
        net = m(tokens)
        out.append(m.get_normalized_probs(net, log_probs=True).double())
    return (out[0] - out[1]).abs().max().item()
