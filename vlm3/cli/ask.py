"""`vlm3 ask RUN_OR_URL PAGE QUESTION`: the verb (arguments, output, exit codes); the asking is vlm3.serve.ask's."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Callable

from vlm3.serve.ask import (KEY_VAR, NO_KEY, MAX_TOKENS_LIMIT, DEFAULT_TIMEOUT_S, DEFAULT_MAX_TOKENS, AskError, Answer, RedactedTokens, ask_endpoint, chat_request, check_question, describe_failure, endpoint_base_url, format_stats, image_url_for, is_endpoint, redacted, terminal_text)


def print_text(text: str) -> None:
    sys.stdout.write(terminal_text(text))
    sys.stdout.flush()


def cmd_ask(args: argparse.Namespace) -> int:
    from vlm3.serve.client import redact
    from vlm3.core.console import err_console, terminal_json

    secrets = (os.environ.get(KEY_VAR) or "",)
    tokens = RedactedTokens(secrets, print_text) if args.stream and not args.json else None
    try:
        question = check_question(args.question)
        image_url = image_url_for(args.image)
        if args.max_tokens is not None and not 1 <= args.max_tokens <= MAX_TOKENS_LIMIT:
            raise AskError(f"--max-tokens {args.max_tokens}: pass 1 to {MAX_TOKENS_LIMIT}")
        if not 0.0 <= args.temperature <= 2.0:
            raise AskError(f"--temperature {args.temperature}: pass 0 to 2 (0 answers the same every time)")
        if args.timeout <= 0:
            raise AskError(f"--timeout {args.timeout}: pass a positive number of seconds")
        answer = redacted(answer_target(args, question, image_url, err_console, tokens.feed if tokens else None), secrets)
    except AskError as exc:
        if tokens and tokens.printed:
            sys.stdout.write("\n")  # a stopped stream: the error starts a line of its own
        # The server's words are in most messages: the key it may echo redacted, controls dropped.
        err_console.print(f"Error: {terminal_text(redact(str(exc), secrets))}", markup=False)
        return 1
    # The answer exactly as given (no rich markup or emoji codes), made safe for a terminal.
    if args.json:
        sys.stdout.write(terminal_json(answer.to_dict()) + "\n")
    elif tokens:
        tokens.close()
        sys.stdout.write("\n")
    else:
        sys.stdout.write(terminal_text(answer.text) + "\n")
    sys.stdout.flush()
    err_console.print(format_stats(answer), markup=False)
    return 0


def answer_target(args: argparse.Namespace, question: str, image_url: str, err_console,
                  on_token: Callable[[str], None] | None) -> Answer:
    import openai

    if is_endpoint(args.target):
        base_url = endpoint_base_url(args.target)
        key = os.environ.get(KEY_VAR) or ""

        def build(model: str) -> dict[str, Any]:
            return chat_request(model, image_url, question, system=args.system, max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS,
                                temperature=args.temperature, stream=args.stream)

        try:
            return asyncio.run(ask_endpoint(base_url, key or NO_KEY, args.model, build, args.timeout, on_token))
        except openai.OpenAIError as exc:
            raise AskError(describe_failure(exc, base_url, bool(key), args.model or "?", args.timeout)) from None
    return answer_from_run(args, question, image_url, err_console, on_token)


def answer_from_run(args: argparse.Namespace, question: str, image_url: str, err_console, on_token) -> Answer:
    """Serve the run for this one question (vLLM when installed, else transformers serve; vlm3.serve.local), then stop it."""
    import openai

    from vlm3.recipe.runs import RunDir, RunError
    from vlm3.serve.local import ServeError, plan_serving, run_server
    from vlm3.train.trainer_env import TrainerEnvMissing

    try:
        run = RunDir.open(args.target)
        recipe = run.recipe()
        plan = plan_serving(run, recipe, args.base, args.engine, args.checkpoint)
    except RunError as exc:
        raise AskError(f"{exc} (or pass an endpoint URL: https://...)") from None
    except ServeError as exc:
        raise AskError(str(exc)) from None
    system = args.system if args.system is not None else recipe.data.system_prompt
    err_console.print(f"serving {plan.describe()} locally for this question (log {run.logs_dir / 'serve-ask.log'}) ...", markup=False)
    try:
        with run_server(plan, run, log_file=run.logs_dir / "serve-ask.log") as server:
            request = chat_request(args.model or server.model, image_url, question, system=system,
                                   max_tokens=args.max_tokens or recipe.eval.max_tokens,
                                   temperature=args.temperature, stream=args.stream)
            try:
                return asyncio.run(ask_endpoint(server.base_url, NO_KEY, request["model"], lambda _: request, args.timeout, on_token))
            except openai.OpenAIError as exc:
                raise AskError(describe_failure(exc, f"the local server for {run.path}", False, request["model"], args.timeout, local=True)) from None
    except (ServeError, TrainerEnvMissing) as exc:
        raise AskError(str(exc)) from None


def register(sub) -> None:
    p = sub.add_parser("ask", help="one question about one page image, to a run (served for the call) or an endpoint")
    p.add_argument("target", metavar="ENDPOINT_OR_RUN", help="an OpenAI-compatible base URL (https://.../v1) or a run directory")
    p.add_argument("image", help="a page image file, or an http(s) URL the server fetches")
    p.add_argument("question")
    p.add_argument("--model", help="model name to request (default: the one the endpoint serves; a run's own model)")
    p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    p.add_argument("--max-tokens", type=int, help=f"answer length cap (default: {DEFAULT_MAX_TOKENS}; a run's own eval.max_tokens)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--system", help="system prompt (default for a run: its recipe's data.system_prompt)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the answer (a cold endpoint takes minutes)")
    p.add_argument("--base", action="store_true", help="with a run: serve its base model instead of the fine-tuned one")
    p.add_argument("--checkpoint", type=int, metavar="N", help="with a run: serve saved checkpoint N's checked merge "
                   "(`vlm3 merge RUN --checkpoint N` first)")
    from vlm3.serve.local import add_engine_arg

    add_engine_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (answer, latency, token counts) instead of text")
    p.set_defaults(func=cmd_ask)
