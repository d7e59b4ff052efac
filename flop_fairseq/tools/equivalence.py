"""Checking that two language models compute the same function."""

import torch


@torch.no_grad()
def check_logprobs(model, num_words: int, length: int = 32, seed: int = 0) -> torch.Tensor:
    """``model``'s log-probabilities (float64, eval mode) on the check batch: 2 x ``length`` random
    tokens (ids from 4 up, past fairseq's special symbols). Taken before a model is freed, they
    let a later model be compared with it."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, num_words, (2, length), generator=g)
    model.eval()
    return model.get_normalized_probs(model(tokens), log_probs=True).double()


def max_logprob_difference(a, b, num_words: int, length: int = 32, seed: int = 0) -> float:
    """Largest ``|log p_a - log p_b|`` over the check batch, both fairseq models in eval mode (``a``
    may also be :func:`check_logprobs` of a model)."""
    ref = a if isinstance(a, torch.Tensor) else check_logprobs(a, num_words, length, seed)
    return (ref - check_logprobs(b, num_words, length, seed)).abs().max().item()
