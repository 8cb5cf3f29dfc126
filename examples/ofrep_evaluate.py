"""Evaluate one Shipway feature through OpenFeature's remote evaluation protocol (OFREP).

Uses nothing Shipway-specific: only the OpenFeature SDK and its OFREP provider, exactly as a
product service in any language would. Needs `pip install openfeature-sdk
openfeature-provider-ofrep`.

    SHIPWAY_SDK_KEY=sw_sdk_... python examples/ofrep_evaluate.py --feature ticket-summarizer --targeting-key user-42

Prints the variant, the reason and the prompt version and model served; exits 1 when the
evaluation failed (the code default was used because of an error), 2 on bad arguments.
"""
import argparse
import os

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a Shipway feature over OFREP.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Shipway's base URL")
    parser.add_argument("--key", default=os.environ.get("SHIPWAY_SDK_KEY"),
                        help="SDK key (default: $SHIPWAY_SDK_KEY)")
    parser.add_argument("--feature", default="ticket-summarizer")
    parser.add_argument("--targeting-key", default="user-42")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set SHIPWAY_SDK_KEY")

    key = args.key
    api.set_provider(OFREPProvider(args.url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}))
    try:
        client = api.get_client()
        # The code default: what the service runs when Shipway says "off" or cannot answer.
        details = client.get_object_details(args.feature, {}, EvaluationContext(args.targeting_key))
    finally:
        api.shutdown()

    reason = getattr(details.reason, "value", details.reason)
    print(f"feature: {args.feature}")
    print(f"variant: {details.variant}")
    print(f"reason: {reason}")
    value = details.value if isinstance(details.value, dict) else {}
    if value:
        print(f"prompt_version: {value.get('prompt_version')}")
        print(f"model: {value.get('model')}")
    else:
        print("value: (code default)")
    if details.error_code is not None:
        code = getattr(details.error_code, "value", details.error_code)
        print(f"error: {code}: {details.error_message}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
