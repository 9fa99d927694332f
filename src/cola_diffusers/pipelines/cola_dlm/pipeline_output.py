from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class ColaDLMPipelineOutput(BaseOutput):
    """
    Output of [`ColaDLMPipeline`].

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, gen_length)`):
            The new token ids (the prompt is stripped off), padded with the pad token after a stop token.
        texts (`list[str]`, *optional*):
            The decoded new text of every prompt, up to (without) its stop token. Set for `output_type="text"`.
        latents (`torch.Tensor` of shape `(batch_size, num_blocks * block_length, latent_dim)`, *optional*):
            The clean latents of every generated block in the DiT's normalised space. Set for `output_type="latent"`.
    """

    sequences: torch.LongTensor
    texts: list[str] | None = None
    latents: torch.Tensor | None = None
