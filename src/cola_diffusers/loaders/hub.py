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

"""Hub repos in either layout: diffusers' own download path for diffusers repos, a snapshot for the official one."""

import os
import socket
from urllib.parse import urlparse

from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

from .layout import REPO_ID


# The keywords of `DiffusionPipeline.from_pretrained` that say where and how to fetch files.
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
# Seconds to wait for a connection to the Hub before using the cache alone (huggingface_hub would retry for 30 s).
HUB_CONNECT_TIMEOUT = 3.0


def hub_reachable() -> bool:
    """Whether a connection to the Hub's endpoint opens within `HUB_CONNECT_TIMEOUT` (assumed behind a proxy)."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=HUB_CONNECT_TIMEOUT).close()
    except OSError:
        return False
    return True


def hub_download_kwargs(name: str, kwargs: dict) -> dict:
    """`kwargs` with `local_files_only` set when `name` is a Hub repo and the Hub cannot be reached: the cache only."""
    offline = constants.HF_HUB_OFFLINE or kwargs.get("local_files_only") or os.path.isdir(name)
    if offline or not REPO_ID.fullmatch(name) or hub_reachable():
        return kwargs
    return {**kwargs, "local_files_only": True}


def official_snapshot(name: str, **kwargs) -> str | None:
    """
    The local folder of `name` when it is a folder or a Hub repo without `model_index.json` (the official layout,
    downloaded whole with the `HUB_KWARGS` of `kwargs`); None for a diffusers repo, which diffusers downloads itself.
    """
    if os.path.isdir(name):
        return name
    if not REPO_ID.fullmatch(name):
        raise FileNotFoundError(f"The folder {name} does not exist (and it is not a Hub repo id).")
    hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if kwargs.get(key) is not None}
    try:
        try:
            hf_hub_download(name, "model_index.json", **hub_kwargs)
            return None
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return snapshot_download(name, **hub_kwargs)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        if constants.HF_HUB_OFFLINE:
            message = f"{name} is not in the local Hub cache and HF_HUB_OFFLINE is set: pass a local folder, or"
            raise OSError(f"{message} download it once online.") from error
        if hub_kwargs.get("local_files_only"):
            message = f"Cannot reach the Hub for {name}, and it is not in the local cache: pass a local folder, or"
            raise OSError(f"{message} retry online.") from error
        raise OSError(
            f"Cannot reach the Hub for {name} ({type(error).__name__}): pass a local folder, or set HF_HUB_OFFLINE=1"
            " with a cached copy."
        ) from error
