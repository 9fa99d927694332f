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

"""The bar of generated blocks of a [`ColaDLMPipeline`] call."""

from tqdm.auto import tqdm


def block_progress_bar(pipe, num_blocks: int, streamer) -> tqdm:
    """The bar of generated blocks; none inside streamed text, where the stream itself shows the progress."""
    if streamer is not None:
        return tqdm(total=num_blocks, disable=True)
    return pipe.progress_bar(total=num_blocks)


def end_progress_bar(progress_bar: tqdm, block_index: int, reason: str):
    """Ends the bar full after `block_index`; when blocks were left over, says why they were not needed."""
    if block_index + 1 < progress_bar.total:
        progress_bar.set_postfix_str(reason, refresh=False)
        progress_bar.total = block_index + 1
