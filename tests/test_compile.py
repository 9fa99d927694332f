"""torch.compile of the repeated DiT blocks: same output, and no recompilation from block to block."""

import torch

from .conftest import make_tiny_pipeline


PROMPTS = ["Question: What is the capital of France? Answer:", "the", "the river story."]


def test_compiled_repeated_blocks_do_not_recompile_per_block():
    compiled, eager = make_tiny_pipeline(), make_tiny_pipeline()
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    compiled.transformer.compile_repeated_blocks(fullgraph=True, backend=recording_backend)
    noise = torch.randn(3, 24, 8, generator=torch.Generator().manual_seed(0))
    kwargs = {"gen_length": 20, "num_inference_steps": 3, "latents": noise, "eos_early_stop": False}
    result = compiled(PROMPTS, output_type="latent", **kwargs)
    graphs_for_six_blocks = len(graphs)
    compiled(PROMPTS, output_type="latent", **kwargs)

    # Prefill, guided step and commit passes: a handful of graphs, whatever the number of blocks and layers.
    assert graphs_for_six_blocks <= 6
    assert len(graphs) == graphs_for_six_blocks
    torch.testing.assert_close(result.latents, eager(PROMPTS, output_type="latent", **kwargs).latents)
