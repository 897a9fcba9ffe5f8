# The pretrained backbone: DINO's public checkpoint, or (offline demo) a tiny
# ViT pretrained on the synthetic source domain. Exactly one rule makes it.

if CFG["backbone"]["pretrain"]:

    rule pretrain_backbone:
        input:
            settings=stage_path("pretrain"),
            data=ancient(PATHS["synthetic"]),
        output:
            checkpoint=PATHS["checkpoint"],
            stamp=stamp_path(PATHS["checkpoint"]),
        log:
            f"{LOGS}/pretrain_backbone.log",
        params:
            source=f"{PATHS['synthetic']}/source",
        threads: resource("train", "cpus")
        conda:
            ENV
        shell:
            "OMP_NUM_THREADS={threads} vitpeft pretrain --config {input.settings} --data {params.source}"
            " --out {output.checkpoint} > {log} 2>&1"
            " && cp {input.settings} {output.stamp}"

    localrules:
        pretrain_backbone,

else:

    rule fetch_checkpoint:
        output:
            PATHS["checkpoint"],
        log:
            f"{LOGS}/fetch_checkpoint.log",
        params:
            source=fetch_source_args(),
        conda:
            ENV
        shell:
            "vitpeft fetch-checkpoint {params.source} --out {output} > {log} 2>&1"

    localrules:
        fetch_checkpoint,
