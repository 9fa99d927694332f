"""The JSON bodies of completion and chat completion responses."""

import time
import uuid

from .engine import Completion


def response_header(model_name: str, chat: bool, stream: bool) -> dict:
    """The fields that open a response, or every chunk of a stream: id, object, created, model."""
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": ("chat.completion" if chat else "text_completion") + (".chunk" if chat and stream else ""),
        "created": int(time.time()),
        "model": model_name,
    }


def usage(prompt_tokens: int, completions: list[Completion]) -> dict:
    """The `usage` of a request whose prompts, `n` times each, total `prompt_tokens`."""
    completion_tokens = sum(completion.completion_tokens for completion in completions)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_choice(index: int, completion: Completion, chat: bool) -> dict:
    if chat:
        return {
            "index": index,
            "message": {"role": "assistant", "content": completion.text},
            "logprobs": None,
            "finish_reason": completion.finish_reason,
        }
    return {"index": index, "text": completion.text, "logprobs": None, "finish_reason": completion.finish_reason}


def completion_body(header: dict, completions: list[Completion], chat: bool, prompt_tokens: int) -> dict:
    """The whole (non-streamed) response."""
    choices = [completion_choice(index, completion, chat) for index, completion in enumerate(completions)]
    return {**header, "choices": choices, "usage": usage(prompt_tokens, completions)}
