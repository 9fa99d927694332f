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

"""
Fuzzes the server against its own OpenAPI description with schemathesis (`pip install -e ".[serve,fuzz]"`): the demo
model behind an API key on 127.0.0.1, every check, positive and negative cases. Exits with schemathesis's status.

    python scripts/fuzz_server.py --max-examples 60

A prompt that does not fit the context is answered 400 although its JSON is schema-valid (token counts are not
expressible in JSON Schema), so 400 counts as an accepted answer to positive cases.
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import uvicorn

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.demo import DEMO_MODEL_PATH
from cola_diffusers.serving import create_app


API_KEY = "sk-fuzz"
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "400", "401", "404"]
"""


def start_server(port: int) -> uvicorn.Server:
    pipe = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    # Short answers keep the run short: a case may still ask for 256 steps per token.
    app = create_app(pipe, "reverse_digits", api_key=API_KEY, max_queue=256, max_tokens_limit=8)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--max-examples", type=int, default=60, help="Cases per operation and mode.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    server = start_server(args.port)
    url = f"http://127.0.0.1:{args.port}"
    assert httpx.get(f"{url}/health").status_code == 200
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
        config.write(CONFIG)
        config.flush()
        command = ["st", "--config-file", config.name, "run", f"{url}/openapi.json", "--checks", "all"]
        # Answers take as long as the sampling a case asks for: response times are no conformance check.
        command += ["--max-response-time", "600"]
        command += ["--mode", "all", "-n", str(args.max_examples), "--seed", str(args.seed), "-w", "1"]
        command += ["--request-timeout", "120", "-H", f"Authorization: Bearer {API_KEY}"]
        status = subprocess.run(command).returncode
    server.should_exit = True
    sys.exit(status)


if __name__ == "__main__":
    main()
