# The pretrained backbone: fetched (a URL or the timm hub), a local file (no rule), or,
# for the offline demo, a tiny ViT pretrained on the synthetic source domain.

if PLAN.backbone.info["rule"] == "pretrain":

    rule pretrain_backbone:
        input:
            unpack(made_or(PLAN.backbone.path, {"data": ancient(PLAN.synthetic.path)})),
        output:
            checkpoint=PLAN.backbone.path,
        log:
            f"{LOGS}/pretrain_backbone-{PLAN.backbone.key}.log",
        benchmark:
            f"{BENCH}/pretrain_backbone-{PLAN.backbone.key}.tsv"
        params:
            device=device("train"),
            config=CONFIG,
            source=f"{PLAN.synthetic.path}/source",
        threads: resource("train", "cpus")
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft pretrain {params.device} --config {params.config} --data {params.source}"
                " --out {output.checkpoint}"
            )

    localrules:
        pretrain_backbone,

elif PLAN.backbone.info["rule"] == "fetch":

    rule fetch_checkpoint:
        output:
            checkpoint=PLAN.backbone.path,
        log:
            f"{LOGS}/fetch_checkpoint-{PLAN.backbone.key}.log",
        benchmark:
            f"{BENCH}/fetch_checkpoint-{PLAN.backbone.key}.tsv"
        params:
            source=(
                f"--timm-hub {CFG['backbone']['timm_hub']}"
                if CFG["backbone"]["timm_hub"]
                else f"--url {CFG['backbone']['url']} --layout {CFG['backbone']['layout']}"
                + (f" --sha256 {CFG['backbone']['sha256']}" if CFG["backbone"]["sha256"] else "")
            ),
        conda:
            ENV
        shell:
            logged("vitpeft fetch-checkpoint {params.source} --out {output.checkpoint}")

    localrules:
        fetch_checkpoint,
