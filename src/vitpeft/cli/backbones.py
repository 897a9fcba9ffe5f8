"""`vitpeft list-backbones`: the backbone presets a config can name (backbone.preset)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "list-backbones",
        help="the backbone presets: architecture, checkpoint, key layout, normalisation, k-NN feature",
        description="Print the presets of vitpeft.models.presets as a Markdown table (set one as backbone.preset).",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from vitpeft.models import presets

    print("| preset | timm architecture | img | patch | depth | width | layout | mean / std | feature | about |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, preset in presets.PRESETS.items():
        norm = "ImageNet" if preset["mean"] == presets.IMAGENET_MEAN else "0.5 / 0.5"
        row = [name, preset["arch"], preset["img_size"], preset["patch_size"], preset["depth"], preset["embed_dim"],
               preset["layout"], norm, preset["feature"], preset["about"]]
        print("| " + " | ".join(map(str, row)) + " |")
    return 0
