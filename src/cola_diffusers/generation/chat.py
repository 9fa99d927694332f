# Copyright 2026 The cola-diffusers Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The official ways of turning chat messages into a Cola-DLM prompt, as tokenizer chat templates."""

from dataclasses import dataclass


# The official OpenAI adapter, for base checkpoints: one user message is sent verbatim; otherwise one
# `System: ...` / `User: ...` / `Assistant: ...` line per non-empty message, then `Assistant:`.
PLAIN_TEMPLATE = (
    "{%- if messages | length == 1 and messages[0].role == 'user' -%}"
    "{{- messages[0].content -}}"
    "{%- else -%}"
    "{%- set ns = namespace(lines=[]) -%}"
    "{%- for message in messages if message.content | trim -%}"
    "{%- set role = message.role | lower -%}"
    "{%- set name = {'system': 'System', 'user': 'User', 'assistant': 'Assistant'}.get(role, message.role) -%}"
    "{%- set ns.lines = ns.lines + [name ~ ': ' ~ message.content | trim] -%}"
    "{%- endfor -%}"
    "{%- if not ns.lines -%}{{- raise_exception('Every message of the conversation is empty.') -}}{%- endif -%}"
    "{%- if messages[-1].role != 'assistant' -%}{%- set ns.lines = ns.lines + ['Assistant:'] -%}{%- endif -%}"
    "{{- ns.lines | join('\n') -}}"
    "{%- endif -%}"
)

# The official SFT format (`chat_format="text"` of the official SFT script): `User: ...\n`, `Assistant: ...■\n`; a
# leading system message is joined to the next message with a blank line, as in training.
TEXT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message.role == 'system' -%}"
    "{%- set ns.system = message.content ~ '\n\n' -%}"
    "{%- elif message.role == 'assistant' -%}"
    "{{- 'Assistant: ' ~ ns.system ~ message.content ~ '■\n' -}}{%- set ns.system = '' -%}"
    "{%- else -%}"
    "{{- 'User: ' ~ ns.system ~ message.content ~ '\n' -}}{%- set ns.system = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if ns.system -%}{{- 'User: ' ~ ns.system -}}{%- endif -%}"
    "{{- 'Assistant: ' -}}"
)

# ChatML, the official SFT script's `chat_format="chatml"`.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' ~ message.role ~ '\n' ~ message.content ~ '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{{- '<|im_start|>assistant\n' -}}"
)


@dataclass(frozen=True)
class ChatFormat:
    """
    A way of rendering messages into a prompt.

    Args:
        template (`str`): The Jinja chat template.
        stop (`tuple[str, ...]`): Strings that end an assistant turn.
        stop_token (`str`, *optional*): The token that ends an assistant turn.
        pad_with_stop (`bool`): Whether the stop token, not `<|pad|>`, pads the prompt's last block.
        required_tokens (`tuple[str, ...]`): Special tokens the tokenizer must have.
    """

    template: str
    stop: tuple[str, ...] = ()
    stop_token: str | None = None
    pad_with_stop: bool = False
    required_tokens: tuple[str, ...] = ()


CHAT_FORMATS = {
    "plain": ChatFormat(PLAIN_TEMPLATE),
    # The official chat CLI pads `text` prompts with ■.
    "text": ChatFormat(TEXT_TEMPLATE, stop=("■",), stop_token="■", pad_with_stop=True),
    "chatml": ChatFormat(CHATML_TEMPLATE, stop_token="<|im_end|>", required_tokens=("<|im_start|>", "<|im_end|>")),
}
