"""Token sampling from the Text VAE decoder's logits."""

import torch


def apply_repetition_penalty(logits: torch.Tensor, history: torch.LongTensor, penalty: float) -> torch.Tensor:
    """
    Penalises every token of `history`: positive logits are divided by `penalty`, negative ones multiplied.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_tokens, vocab_size)`): Logits of one block.
        history (`torch.LongTensor` of shape `(batch_size, history_length)`): Tokens sampled in earlier blocks.
        penalty (`float`): The penalty; 1.0 changes nothing.
    """
    index = history[:, None, :].expand(-1, logits.shape[1], -1)
    score = logits.gather(-1, index)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(-1, index, score)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Sets logits outside the `top_k` largest and outside the `top_p` probability nucleus to `-inf`."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative > top_p
        remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, sorted_index, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    history: torch.LongTensor | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.LongTensor:
    """
    Samples one token per position: repetition penalty, then temperature, top-k and top-p, then a draw.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_tokens, vocab_size)`): Decoder logits of one block.
        history (`torch.LongTensor` of shape `(batch_size, history_length)`, *optional*): Tokens to penalise.
        temperature (`float`, defaults to 0.0): 0 picks the most likely token.
        top_k (`int`, *optional*), top_p (`float`, *optional*): Filters applied when `temperature > 0`.
        repetition_penalty (`float`, defaults to 1.0): Penalty of `history` tokens.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): One generator, or one per row.

    Returns:
        `torch.LongTensor` of shape `(batch_size, num_tokens)`.
    """
    logits = logits.float()
    if history is not None and history.shape[1] > 0 and repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, history, repetition_penalty)
    if temperature == 0:
        return logits.argmax(dim=-1)

    probs = filter_top_k_top_p(logits / temperature, top_k, top_p).softmax(dim=-1)
    if isinstance(generator, list):
        rows = [torch.multinomial(row, 1, generator=g).squeeze(-1) for row, g in zip(probs, generator)]
        return torch.stack(rows)
    return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
