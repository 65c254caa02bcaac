"""The ``hf-loglinear`` command.

    hf-loglinear convert SRC DST [--num-levels 15] [--dtype bfloat16] [--no-verify] [--overwrite]
                                 [--push-to-hub REPO_ID [--private]]
    hf-loglinear upload DIR REPO_ID [--private] [--revision BRANCH]
    hf-loglinear quickstart [--out DIR] [--steps N] [--lora-steps N]
    hf-loglinear finetune MODEL DATA OUT [--rank 16] [--steps N] [--max-length 2048] [--merge] [...]
    hf-loglinear memory CONFIG_OR_MODEL [--seq-len 1024 131072] [--batch 1] | --compare

A subcommand is two small functions, ``<name>_arguments(parser)`` and ``<name>(args) -> exit code``,
listed in ``COMMANDS``. Bad input exits with status 2 and one line on stderr saying what to do;
a failure of the network or of a verification exits with status 1.
"""
from __future__ import annotations

import argparse
import re
import signal
import sys

__all__ = ["COMMANDS", "main"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'2GB' / '500MB' / '1048576' -> bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 2GB or 500MB)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** ("", "K", "M", "G", "T").index(unit.upper()))


# --------------------------------------------------------------------------- convert
def convert_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("src", help="checkpoint folder or hub repo id (Mamba-2, Gated DeltaNet, the authors' or ours)")
    parser.add_argument("dst", help="output folder (created; must not exist or be empty unless --overwrite)")
    parser.add_argument("--num-levels", type=int, default=15, help="level weights L (default 15: 16K tokens of distinct levels)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="output dtype (default: the source's)")
    parser.add_argument("--no-verify", action="store_true", help="skip running both models and comparing logits")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    parser.add_argument("--max-shard-size", type=parse_size, default="2GB", help="largest safetensors shard (default 2GB)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the result to this hub repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")


def convert(args) -> int:
    from .conversion import convert as run_conversion
    from .hub import push_folder

    if args.private and not args.push_to_hub:
        raise ValueError("--private only applies with --push-to-hub REPO_ID")
    report = run_conversion(
        args.src, args.dst, num_levels=args.num_levels, dtype=args.dtype, verify=not args.no_verify,
        overwrite=args.overwrite, max_shard_size=args.max_shard_size, repo_id=args.push_to_hub,
    )
    print(report.summary())
    print(f"wrote {report.destination}")
    if args.push_to_hub:
        url = push_folder(report.destination, args.push_to_hub, private=args.private)
        print(f"uploaded {report.destination} to {args.push_to_hub}: {url}")
    return 0


# --------------------------------------------------------------------------- upload
def upload_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("dir", help="folder to upload (e.g. what convert or quickstart wrote)")
    parser.add_argument("repo_id", help="hub repo, 'owner/name' (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to upload to (created from main if missing)")


def upload(args) -> int:
    from .hub import push_folder

    url = push_folder(args.dir, args.repo_id, private=args.private, revision=args.revision)
    print(f"uploaded {args.dir} to {args.repo_id}: {url}")
    return 0


# --------------------------------------------------------------------------- quickstart
def quickstart_arguments(parser: argparse.ArgumentParser):
    from .quickstart import DEFAULT_LORA_STEPS, DEFAULT_OUT, DEFAULT_STEPS

    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps (default {DEFAULT_STEPS})")
    parser.add_argument("--lora-steps", type=int, default=DEFAULT_LORA_STEPS,
                        help=f"LoRA fine-tuning steps after the conversion, 0 to skip (default {DEFAULT_LORA_STEPS})")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def quickstart(args) -> int:
    from .quickstart import run_quickstart

    run_quickstart(args.out, steps=args.steps, lora_steps=args.lora_steps, overwrite=args.overwrite)
    return 0


# --------------------------------------------------------------------------- finetune
def finetune_arguments(parser: argparse.ArgumentParser):
    from .finetune import finetune_arguments as add_arguments

    add_arguments(parser)


def finetune(args) -> int:
    from .finetune import run_finetune

    return run_finetune(args)


# --------------------------------------------------------------------------- memory
def memory_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", nargs="?", help="a model folder, a config.json, or a preset name")
    parser.add_argument("--seq-len", type=int, nargs="+", default=[1024, 8192, 32768, 131072], help="context lengths")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--compare", action="store_true", help="the ~800M comparison table of the presets")


def memory(args) -> int:
    from .memory import PRESETS, load_shape, table

    if not args.compare and not args.model:
        raise ValueError(f"name a model folder, a config.json or a preset ({', '.join(PRESETS)}), or pass --compare")
    if min(args.seq_len) < 1 or args.batch < 1:
        raise ValueError("--seq-len and --batch must be >= 1")
    shapes = [load_shape(name) for name in (PRESETS if args.compare else [args.model])]
    print(table(shapes, args.seq_len, args.batch, args.dtype))
    return 0


COMMANDS = {
    "convert": ("turn a Mamba-2 / Gated DeltaNet checkpoint into a log-linear model", convert_arguments, convert),
    "upload": ("upload a folder to the Hugging Face Hub", upload_arguments, upload),
    "quickstart": ("train, convert and sample a tiny model on CPU, nothing downloaded", quickstart_arguments, quickstart),
    "finetune": ("LoRA-fine-tune a log-linear model on text (runs under torchrun / accelerate launch)", finetune_arguments, finetune),
    "memory": ("state, cache and prefill-buffer sizes of a model at given context lengths", memory_arguments, memory),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-loglinear", description="Log-linear attention for Hugging Face models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def _interrupt(signum, frame):
    # A terminated run unwinds like Ctrl-C, so staging folders are removed on the way out.
    raise KeyboardInterrupt


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    from .hub import HubError

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"hf-loglinear {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (HubError, RuntimeError, OSError) as exc:
        print(f"hf-loglinear {args.command}: failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hf-loglinear {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
