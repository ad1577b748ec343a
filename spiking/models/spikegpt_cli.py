"""``spiking generate CHECKPOINT --prompt TEXT``: stream characters from a SpikeGPT checkpoint.

Wire into the top-level CLI with ``spikegpt_cli.add_parser(subparsers)``; the parser's
``func`` default is :func:`cmd_generate`.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate", help="stream text from a SpikeGPT checkpoint (recurrent mode)",
        description="Generate characters token by token with per-layer recurrent state.")
    p.add_argument("checkpoint", help="file written by spiking.models.spikegpt.save_checkpoint "
                                      "(e.g. by benchmarks/train_issue7.py)")
    p.add_argument("--prompt", default="def ", help="text to condition on (default: 'def ')")
    p.add_argument("--n", "--max-new-tokens", dest="n", type=int, default=200,
                   help="number of characters to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=cmd_generate)
    return p


def cmd_generate(args) -> int:
    from spiking.models import spikegpt as S

    try:
        model, vocab, _ = S.load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.n < 0:
        print(f"error: --n must be >= 0, got {args.n}", file=sys.stderr)
        return 2
    if not args.prompt:
        print("error: --prompt must not be empty", file=sys.stderr)
        return 2
    unknown = sorted(set(args.prompt) - set(vocab.chars))
    if unknown:
        print(f"warning: prompt characters {unknown!r} are not in the model's vocabulary; "
              f"they are read as {vocab.chars[0]!r}", file=sys.stderr)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    for tok in S.generate(model, vocab.encode(args.prompt), args.n,
                          temperature=args.temperature, top_k=args.top_k, seed=args.seed):
        out.write(vocab.chars[tok])
        out.flush()
    out.write("\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="spiking")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
