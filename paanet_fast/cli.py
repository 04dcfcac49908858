"""The `paanet-fast` command line (also `python -m paanet_fast`): train, evaluate, predict, export, doctor.

Parsing imports nothing heavy (the choices come from .options): `--help` and argument errors come
before torch is imported; each command imports what it runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .options import AMP_MODES, DATASET_NAMES, KNOWN_BACKENDS, PAPER_DEFAULTS, SYNTHETIC_DEFAULTS, SYNTHETIC_MINUTES

DATASETS = DATASET_NAMES
BACKENDS = ("auto", *KNOWN_BACKENDS)
EXIT_ERROR = 2  # a usage or data problem, or any other error (one line on stderr)
EXIT_SKIPPED = 1  # predict: some image files could not be read and were skipped; the rest were written
CHECKPOINT_HELP = "a run's best.pt or last.pt, or a save_pretrained folder (e.g. from export --format pretrained)"
EPILOG = """examples:
  paanet-fast doctor
  paanet-fast train --dataset synthetic --out runs/demo
  paanet-fast train --dataset kvasir-instrument --data-root data/kvasir-instrument --out runs/kvasir
  paanet-fast train --dataset folder --data-root data/Kvasir-SEG --out runs/kvasir-seg
  paanet-fast train --out runs/kvasir --resume
  torchrun --nproc_per_node=2 -m paanet_fast train --dataset dsb2018 --data-root data/dsb --out runs/dsb
  paanet-fast evaluate --checkpoint runs/kvasir/best.pt --out runs/kvasir/test
  paanet-fast predict --checkpoint runs/kvasir/best.pt images/ --out predictions
  paanet-fast export --checkpoint runs/kvasir/best.pt --out kvasir.onnx
  paanet-fast export --checkpoint runs/kvasir/best.pt --format pretrained --out kvasir-paanet
  paanet-fast predict --onnx kvasir.onnx images/ --out predictions
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _threshold(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _runtime_flags(parser: argparse.ArgumentParser, **defaults) -> None:
    """--backend, --amp, --device, and (for data-reading commands) --workers."""
    parser.add_argument("--backend", choices=BACKENDS, help="operator backend (default: auto)", **defaults)
    parser.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: none)", **defaults)
    parser.add_argument("--device", help="auto (default: the GPU if there is one), cpu, cuda, cuda:N", **defaults)


def _folder_flags(parser: argparse.ArgumentParser) -> None:
    """--images and --masks: the folder dataset's folder names under --data-root."""
    parser.add_argument("--images", help="--dataset folder: the images folder under --data-root (default: images)")
    parser.add_argument("--masks", help="--dataset folder: the masks folder under --data-root (default: masks)")


def _train_description() -> str:
    paper, synthetic = PAPER_DEFAULTS, SYNTHETIC_DEFAULTS
    return (f"Train a PAANet. Real datasets default to the paper's settings (Adam, lr {paper['lr']}, "
            f"{paper['epochs']} epochs, batch {paper['batch_size']}, {paper['image_size']}x{paper['image_size']}, "
            f"{paper['encoder']}, ImageNet weights); the synthetic set to a run of about {SYNTHETIC_MINUTES} minutes "
            f"on 2 CPU cores ({synthetic['epochs']} epochs, {synthetic['num_images']} images of "
            f"{synthetic['image_size']}x{synthetic['image_size']}, {synthetic['encoder']} from scratch, "
            f"lr {synthetic['lr']}).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paanet-fast",
                                     description="PAANet segmentation: train, evaluate, predict, export.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{doctor,train,evaluate,predict,export}")

    doctor = commands.add_parser(
        "doctor", help="check this machine: versions, backends, each backend against the reference",
        description="The first command on a new machine: versions (torch, CUDA, triton, compilers, the build), "
                    "each backend's availability, then every available backend on every device against the "
                    "reference (both operators and a small PAANet, forward and backward) and timed. Ends with one "
                    "PASS/FAIL line per backend and device; exits 1 on any FAIL.")
    doctor.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="also write the report as JSON to FILE; alone: JSON on stdout instead of the text")

    # Train flags default to "not given" so that dataset-dependent defaults apply and --resume can
    # tell the flags the user passed from the ones it should take from the run.
    unset = {"default": argparse.SUPPRESS}
    train = commands.add_parser(
        "train", help="train a PAANet", argument_default=argparse.SUPPRESS, description=_train_description())
    train.add_argument("--dataset", choices=DATASETS, help="required unless --resume")
    train.add_argument("--data-root", help="folder with the dataset's official layout, or for --dataset folder: "
                       "images/ and masks/ (not for synthetic)")
    _folder_flags(train)
    train.add_argument("--classes", type=_positive_int, help="mask classes (default 1, binary): for folder, label "
                       "masks 0..N or one mask folder per class; for synthetic, 2 or 3 shapes as classes")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="global batch (split over torchrun processes)")
    train.add_argument("--image-size", type=int, help="images are resized to N x N")
    train.add_argument("--lr", type=_positive_float, help="Adam learning rate")
    train.add_argument("--encoder", help="resnet18, resnet34, resnet50 or resnet101 (torchvision), or an encoder of "
                       "segmentation_models_pytorch (efficientnet-b0, mit_b2, tu-convnext_tiny, smp:resnet50, ...; "
                       "needs the encoders extra)")
    train.add_argument("--encoder-weights", help="imagenet (or another weights name smp lists for the encoder), "
                       "none, or a state-dict file of the encoder")
    train.add_argument("--seed", type=int, help="seeds the split, the synthetic images, the weights and the augmentation")
    train.add_argument("--workers", type=int, help="data-loading processes per training process")
    train.add_argument("--split-file", help="reuse a split.json instead of making a new split")
    train.add_argument("--num-images", type=int, help="size of the synthetic dataset")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    _runtime_flags(train, **unset)

    evaluate = commands.add_parser("evaluate", help="score a checkpoint: the paper's table, scores.json, per_image.csv")
    evaluate.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    evaluate.add_argument("--dataset", choices=DATASETS, help="default: the checkpoint's dataset")
    evaluate.add_argument("--data-root", help="default: the checkpoint's")
    _folder_flags(evaluate)
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                          help="default: test (the checkpoint's own split unless --split-file)")
    evaluate.add_argument("--split-file")
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.add_argument("--threshold", type=_threshold, default=0.5)
    _runtime_flags(evaluate)
    evaluate.set_defaults(backend="auto", amp="none", device="auto")

    predict = commands.add_parser(
        "predict", help="mask and overlay PNGs for image files or folders",
        description="Write a mask and an overlay PNG for every image file. Entries of a folder that are not "
                    "image files are named and skipped; so are image files that cannot be read, and then the exit "
                    f"status is {EXIT_SKIPPED} (the others are written). Exit status: 0 all written, "
                    f"{EXIT_SKIPPED} some unreadable images skipped, {EXIT_ERROR} an error.")
    network = predict.add_mutually_exclusive_group(required=True)
    network.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    network.add_argument("--onnx", help="an ONNX file written by `paanet-fast export` (run by onnxruntime on the CPU)")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    predict.add_argument("--out", required=True)
    predict.add_argument("--threshold", type=_threshold, default=0.5)
    predict.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default: 8)")
    predict.add_argument("--image-size", type=_positive_int,
                         help="resize images to N x N for the network (default: the size it was trained at, "
                              "from the checkpoint or the ONNX file)")
    _runtime_flags(predict)
    predict.set_defaults(backend="auto", amp="none", device="auto")

    export = commands.add_parser("export", help="a checkpoint's model as an ONNX file or a save_pretrained folder",
                                 description="Write the checkpoint's PAANet as an ONNX file that onnxruntime runs on "
                                             "any batch and image size (its logits; the fused operators in their "
                                             "portable formulation, standard ONNX ops; needs the export extra), or "
                                             "with --format pretrained as the folder save_pretrained writes "
                                             "(config.json, model.safetensors, a README.md model card with the "
                                             "run's dataset and validation scores, training.json), which "
                                             "PAANet.from_pretrained loads and evaluate and predict take as "
                                             "--checkpoint.")
    export.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    export.add_argument("--format", choices=("onnx", "pretrained"), default="onnx", help="default: onnx")
    export.add_argument("--out", required=True, help="the .onnx file to write, or the folder for --format pretrained")
    export.add_argument("--opset", type=_positive_int, help="ONNX opset (default: torch's; --format onnx only)")
    return parser


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "resume")}
    resume = getattr(args, "resume", False)
    if not resume and "dataset" not in given:
        parser.error("train: --dataset is required (unless --resume)")
    if "data_root" in given and given.get("dataset") == "synthetic":
        parser.error("train: --data-root is not used with --dataset synthetic")
    from .train import TrainConfig, dataset_defaults, train

    if resume:
        train(TrainConfig(dataset=given.get("dataset", "synthetic"), out=given["out"]), resume=True, given=given)
    else:
        train(TrainConfig(**{**dataset_defaults(given["dataset"]), **given}))
    return 0


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .evaluate import evaluate

    evaluate(args.checkpoint, args.out, dataset=args.dataset, data_root=args.data_root, split=args.split,
             split_file=args.split_file, batch_size=args.batch_size, workers=args.workers,
             backend=args.backend, amp=args.amp, device=args.device, threshold=args.threshold,
             images=args.images, masks=args.masks)
    return 0


def _predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.onnx is not None and (args.backend != "auto" or args.amp != "none" or args.device not in ("auto", "cpu")):
        parser.error("predict: --backend, --amp and --device apply to --checkpoint (--onnx runs on the CPU)")
    from .predict import predict

    predicted = predict(args.checkpoint, args.inputs, args.out, onnx=args.onnx, backend=args.backend,
                        device=args.device, amp=args.amp, threshold=args.threshold, batch_size=args.batch_size,
                        image_size=args.image_size)
    return EXIT_SKIPPED if predicted.unreadable else 0


def _export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.format == "pretrained":
        if args.opset is not None:
            parser.error("export: --opset applies to --format onnx")
        from .export import export_pretrained

        from .pretrained import FILES

        folder = export_pretrained(args.checkpoint, args.out)
        print(f"wrote {folder}: {', '.join(name for name in FILES if (folder / name).is_file())}")
        return 0
    from .export import export_checkpoint

    print(f"wrote {export_checkpoint(args.checkpoint, args.out, opset=args.opset)}")
    return 0


def _doctor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .doctor import main as doctor

    return doctor(args.json)


COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export, "doctor": _doctor}


def _message(exc: Exception) -> str:
    """The error's own message; for one raised in a DataLoader worker, without the worker's traceback."""
    message = str(exc)
    if "Original Traceback" in message:  # torch re-raises worker errors with the traceback in the message
        message = message.rsplit(f"{type(exc).__name__}: ", 1)[-1].strip()
    return message


def _passive_openmp_threads() -> None:
    """Set OMP_WAIT_POLICY=PASSIVE for this command unless the user chose a policy.

    PyTorch's OpenMP threads otherwise spin while they wait for each other; on a machine whose
    cores are shared with other work (a 2-core laptop, a busy CI box) a spinning thread that has
    lost its core stalls every parallel region, and training gets several times slower. libgomp
    reads the policy when it is loaded, with torch: before that, setting the variable is enough;
    after it (torch imported before `main` ran) the process starts again.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if "torch" in sys.modules:
        sys.stdout.flush()
        os.execv(sys.executable, sys.orig_argv)  # the same command line, interpreter flags included


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0, EXIT_SKIPPED, or EXIT_ERROR after a one-line error.

    `argv` None means the program's own arguments (the console script and `python -m`); only
    then is the OpenMP wait policy set for the process.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:
        _passive_openmp_threads()
    try:
        return COMMANDS[args.command](args, parser)
    except KeyboardInterrupt:
        print(f"paanet-fast {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every error is one line; PAANET_FAST_TRACEBACK=1 shows where it came from
        if os.environ.get("PAANET_FAST_TRACEBACK") == "1":
            raise
        print(f"paanet-fast {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _describe(exc: Exception) -> str:
    """The message of an error about the command's input (RunError and DatasetError are ValueErrors, a
    missing extra is a ModuleNotFoundError, a file problem an OSError); other errors also name their type."""
    if isinstance(exc, (ValueError, ModuleNotFoundError, OSError)):
        return _message(exc)
    return f"{type(exc).__name__}: {_message(exc)} (PAANET_FAST_TRACEBACK=1 shows the traceback)"
