"""Data subcommands: download, prepare-cifar100, fetch-checkpoint, check-imagenet, prepare-imagenet,
prepare-imagenet-shard, index-imagenet."""

import json

from vitpeft.data import cifar
from vitpeft.data import download
from vitpeft.data import imagenet
from vitpeft.errors import VitpeftError


def register(subparsers) -> None:
    _register_download(subparsers)
    _register_prepare_cifar100(subparsers)
    _register_fetch_checkpoint(subparsers)
    _register_check_imagenet(subparsers)
    _register_prepare_imagenet(subparsers)
    _register_prepare_imagenet_shard(subparsers)
    _register_index_imagenet(subparsers)


def _register_download(subparsers) -> None:
    parser = subparsers.add_parser("download", help="download a file, verify its checksum, write it atomically")
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True, help="destination file")
    checksum = parser.add_mutually_exclusive_group()
    checksum.add_argument("--md5", help="expected md5 (hex)")
    checksum.add_argument("--sha256", help="expected sha256 (hex)")
    _add_deadline(parser)
    parser.set_defaults(func=_download)


def _add_deadline(parser) -> None:
    parser.add_argument(
        "--deadline", type=float, default=None, metavar="SECONDS",
        help=f"give up when the whole transfer takes longer (default {download.DEADLINE_S:g} s = 6 h)",
    )


def _deadline(args) -> float:
    return download.DEADLINE_S if args.deadline is None else args.deadline


def _download(args) -> int:
    download.download(args.url, args.out, md5=args.md5, sha256=args.sha256, deadline_s=_deadline(args))
    print(f"wrote {args.out}")
    return 0


def _register_prepare_cifar100(subparsers) -> None:
    parser = subparsers.add_parser("prepare-cifar100", help="cifar-100-python.tar.gz -> OUT/train and OUT/test")
    parser.add_argument("--archive", required=True, help="the official cifar-100-python.tar.gz")
    parser.add_argument("--out", required=True, help="folder to write (train/ and test/ inside)")
    parser.set_defaults(func=_prepare_cifar100)


def _prepare_cifar100(args) -> int:
    counts = cifar.prepare_cifar100(args.archive, args.out)
    print(f"wrote {args.out}: {counts['train']} train and {counts['test']} test images")
    return 0


def _register_fetch_checkpoint(subparsers) -> None:
    parser = subparsers.add_parser("fetch-checkpoint", help="fetch backbone weights (URL or timm hub)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="a .pth/.safetensors state dict, e.g. DINO's dino_vitbase16_pretrain.pth")
    source.add_argument("--timm-hub", help="a timm model with pretrained weights, e.g. timm/vit_base_patch16_224.dino")
    parser.add_argument("--sha256", help="expected sha256 of the downloaded file (with --url)")
    parser.add_argument("--layout", default="timm", choices=["timm", "dinov2", "mae", "npz"],
                        help="key layout the downloaded file must read in (with --url; default timm)")
    _add_deadline(parser)
    parser.add_argument("--out", required=True, help="destination file (.safetensors for --timm-hub)")
    parser.set_defaults(func=_fetch_checkpoint)


def _fetch_checkpoint(args) -> int:
    from vitpeft.models import fetch  # torch: loaded only when this command runs, never to parse arguments

    if args.timm_hub:
        if args.sha256:
            raise VitpeftError(
                "--sha256 applies to --url only: with --timm-hub the file is written here from timm's weights "
                "(head removed, as safetensors), so there is no published file to checksum; drop --sha256, "
                "or use --url with the checkpoint's URL and its sha256"
            )
        if args.deadline is not None:
            raise VitpeftError("--deadline applies to --url only: the Hugging Face hub client times its own downloads")
        if args.layout != "timm":
            raise VitpeftError("--layout applies to --url only: timm hub copies are written in timm's layout")
        fetch.fetch_timm_checkpoint(args.timm_hub, args.out)
    else:
        fetch.fetch_checkpoint(args.url, args.out, sha256=args.sha256, deadline_s=_deadline(args), layout=args.layout)
    print(f"wrote {args.out}")
    return 0


def _register_check_imagenet(subparsers) -> None:
    parser = subparsers.add_parser("check-imagenet", help="check an ImageNet copy's layout (train/ and val/ class folders)")
    parser.add_argument("--root", required=True)
    parser.set_defaults(func=_check_imagenet)


def _check_imagenet(args) -> int:
    summary = imagenet.check_imagenet(args.root)
    print(json.dumps({"classes": len(summary["classes"]), "train": summary["train"], "val": summary["val"]}))
    return 0


def _add_preprocessing(parser) -> None:
    parser.add_argument("--resize", type=int, default=256, help="shorter side, bicubic (DINO: 256)")
    parser.add_argument("--crop", type=int, default=224, help="centre crop (DINO: 224)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: this job's CPUs)")


def _register_prepare_imagenet(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare-imagenet", help="decode ImageNet into OUT/bank and OUT/queries in one process (small copies)"
    )
    parser.add_argument("--root", required=True, help="ImageFolder copy with train/ and val/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--bank-per-class", type=int, default=None, help="first N train images per class (default: all)")
    parser.add_argument("--query-per-class", type=int, default=None, help="first N val images per class (default: all)")
    _add_preprocessing(parser)
    parser.add_argument("--shards", type=int, default=1, help="shards per split, written one after another (default 1)")
    parser.set_defaults(func=_prepare_imagenet)


def _prepare_imagenet(args) -> int:
    counts = imagenet.prepare_imagenet(
        args.root, args.out, args.bank_per_class, args.query_per_class, args.resize, args.crop, args.workers, args.shards
    )
    print(f"wrote {args.out}: {counts['bank']} bank and {counts['queries']} query images")
    return 0


def _register_prepare_imagenet_shard(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare-imagenet-shard",
        help="decode one shard of an ImageNet split into OUT/bank (train) or OUT/queries (val); skips a finished shard",
    )
    parser.add_argument("--root", required=True, help="ImageFolder copy with train/ and val/")
    parser.add_argument("--split", required=True, choices=list(imagenet.PARTS), help="train -> OUT/bank, val -> OUT/queries")
    parser.add_argument("--shard", type=int, required=True, help="which shard, 0..N-1")
    parser.add_argument("--shards", type=int, required=True, help="N: the split's images cut into N contiguous ranges")
    parser.add_argument("--out", required=True, help="the ImageNet cache folder (bank/ and queries/ inside)")
    parser.add_argument("--per-class", type=int, default=None, help="first K images per class of the split (default: all)")
    _add_preprocessing(parser)
    parser.set_defaults(func=_prepare_imagenet_shard)


def _prepare_imagenet_shard(args) -> int:
    if not args.root:  # the workflow passes '' when source.imagenet_dir is not set
        raise VitpeftError(
            "no ImageNet folder: set source.imagenet_dir in the config to your ILSVRC2012 copy (train/ and val/ "
            "class folders; it cannot be downloaded without an account), or source.enabled: false"
        )
    meta = imagenet.prepare_shard(
        args.root, args.split, args.shard, args.shards, args.out, args.per_class, args.resize, args.crop, args.workers
    )
    rows = meta["shard"]
    print(f"shard {args.shard}/{args.shards} {args.split}: {meta['count']} images (rows {rows['start']} to "
          f"{rows['stop'] - 1} of {meta['total']}) ready")
    return 0


def _register_index_imagenet(subparsers) -> None:
    parser = subparsers.add_parser(
        "index-imagenet", help="check all shards of OUT/bank and OUT/queries, then index them for the k-NN"
    )
    parser.add_argument("--out", required=True, help="the ImageNet cache folder the shard jobs wrote")
    parser.add_argument("--shards", type=int, required=True, help="N of the train shards (prepare-imagenet-shard's)")
    parser.add_argument("--query-shards", type=int, default=None, help="N of the val shards (default: --shards)")
    parser.set_defaults(func=_index_imagenet)


def _index_imagenet(args) -> int:
    counts = imagenet.index_imagenet(args.out, args.shards, args.query_shards)
    print(f"indexed {args.out}: {counts['bank']} bank and {counts['queries']} query images")
    return 0
