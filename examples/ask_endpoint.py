"""Ask the fine-tuned model about one manual page from your own app, with the official `openai` client.

Usage:
    export VLM3_API_KEY=...   # the endpoint's key (the VLLM_API_KEY in the Modal secret vlm3-endpoint)
    python examples/ask_endpoint.py https://<workspace>--vlm3-serve.modal.run/v1 e30m3 page.jpg "What is the torque of the head bolts?"
    python examples/ask_endpoint.py URL MODEL https://example.com/page-042.jpg "..." --stream
    python examples/ask_endpoint.py http://127.0.0.1:8000/v1 e30m3 page.jpg "..."   # `vlm3 serve RUN` (its key, if any)

MODEL is the recipe's served name (`serve.served_model_name`, else the recipe's name), the same on
Modal and under `vlm3 serve`. Needs only `pip install openai`. The tests run this file against the
tiny model served by vLLM (`make test-vllm`) and by `transformers serve`, so what it shows keeps working.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import sys
from pathlib import Path

from openai import OpenAI


def page_url(image: str) -> str:
    """An https URL as is (the server downloads it); a local file as a base64 data URL."""
    if image.startswith(("http://", "https://")):
        return image
    mime = mimetypes.guess_type(image)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(Path(image).read_bytes()).decode()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="the base URL, ending in /v1")
    parser.add_argument("model", help="the served model name (`modal deploy` and `vlm3 serve` print it)")
    parser.add_argument("image", help="a page image file or an https URL")
    parser.add_argument("question")
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()

    client = OpenAI(
        base_url=args.endpoint,
        api_key=os.environ.get("VLM3_API_KEY", "EMPTY"),  # sent as `Authorization: Bearer <key>`
        timeout=600,  # seconds: the first request to a scaled-down endpoint waits for a cold start
        max_retries=2,  # the client retries 429, 5xx and dropped connections with backoff
    )
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": page_url(args.image)}},  # the page first, as in training
        {"type": "text", "text": args.question},
    ]}]

    if not args.stream:
        response = client.chat.completions.create(model=args.model, messages=messages, max_tokens=256, temperature=0)
        print(response.choices[0].message.content)
        usage = response.usage
        print(f"tokens: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion", file=sys.stderr)
        return 0

    stream = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=256, temperature=0,
        stream=True, stream_options={"include_usage": True},  # the last chunk then carries the token counts
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            print(f"\ntokens: {chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion", file=sys.stderr)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
