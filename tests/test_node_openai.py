"""The official node `openai` client streams a chat completion from `aethermind serve` and
reads `reasoning_content` apart from the answer, as the Python client does (`make
test-interop`: needs node and npm; the pinned package is installed once, outside the repo's
tracked files, into the pytest cache, else a temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import openai
import pytest
from _serve_helpers import running_server

pytestmark = pytest.mark.interop

NODE_OPENAI = "6.49.0"  # the last release that runs on node 20 (7.x needs node >= 22)

SCRIPT = r"""
const { OpenAI } = require("openai");
(async () => {
  const [baseURL, model, prompt] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model, stream: true, temperature: 0, max_tokens: 40,
    messages: [{ role: "user", content: prompt }],
  });
  let reasoning = "", content = "";
  for await (const chunk of stream) {
    const delta = (chunk.choices[0] || {}).delta || {};
    reasoning += delta.reasoning_content || "";
    content += delta.content || "";
  }
  console.log(JSON.stringify({ reasoning, content }));
})().catch((err) => { console.error(String(err)); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_openai(request, tmp_path_factory):
    """node_modules holding the pinned `openai` package (installed on first use)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed (apt-get install nodejs npm)")
    cache = getattr(request.config, "cache", None)
    where = (cache.mkdir(f"node-openai-{NODE_OPENAI}") if cache is not None
             else tmp_path_factory.mktemp("node-openai"))
    modules = where / "node_modules"
    if not (modules / "openai" / "package.json").is_file():
        done = subprocess.run(["npm", "install", "--prefix", str(where), "--no-audit",
                               "--no-fund", "--legacy-peer-deps", "--ignore-scripts",
                               f"openai@{NODE_OPENAI}"],
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.skip(f"npm could not install openai@{NODE_OPENAI}: {done.stderr[-300:]}")
    return modules


def test_node_client_streams_thinking_and_answer_like_the_python_client(
        node_openai, overfit_final, tmp_path):
    script = tmp_path / "stream.js"
    script.write_text(SCRIPT, encoding="utf-8")
    with running_server(overfit_final) as (url, _):
        done = subprocess.run(["node", str(script), url + "/v1", overfit_final.stem,
                               "What is 2+2?"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "NODE_PATH": str(node_openai)}, check=False)
        assert done.returncode == 0, done.stderr
        node = json.loads(done.stdout)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        chunks = list(client.chat.completions.create(
            model=overfit_final.stem, stream=True, temperature=0, max_tokens=40,
            messages=[{"role": "user", "content": "What is 2+2?"}]))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    python = {"reasoning": "".join(d.model_extra.get("reasoning_content") or ""
                                   for d in deltas),
              "content": "".join(d.content or "" for d in deltas)}
    assert node == python
    assert node == {"reasoning": "2 plus 2 makes 4.", "content": "The answer is 4."}
