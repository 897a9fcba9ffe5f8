# The pretrained backbone: DINO's public checkpoint, or (offline demo) a tiny
# ViT pretrained on the synthetic source domain. Exactly one rule makes it.

if CFG["backbone"]["pretrain"]:

    rule pretrain_backbone:
        input:
            settings=stage_path("pretrain"),
            stamps=data_stamp("make_synthetic"),
            data=ancient(PATHS["synthetic"]),
        output:
            checkpoint=PATHS["checkpoint"],
            stamp=data_stamp("pretrain_backbone"),
        log:
            f"{LOGS}/pretrain_backbone.log",
        params:
            config=RESOLVED_CONFIG,
            source=f"{PATHS['synthetic']}/source",
        threads: resource("train", "cpus")
        conda:
            ENV
        shell:
            "OMP_NUM_THREADS={threads} vitpeft pretrain --config {params.config} --data {params.source}"
            " --out {output.checkpoint} > {log} 2>&1"
            " && stamp {output.stamp} {input.settings} {input.stamps}"

    localrules:
        pretrain_backbone,

else:

    rule fetch_checkpoint:
        input:
            settings=stage_path("checkpoint"),
            stamps=[],
        output:
            checkpoint=PATHS["checkpoint"],
            stamp=data_stamp("fetch_checkpoint"),
        log:
            f"{LOGS}/fetch_checkpoint.log",
        params:
            source=fetch_source_args(),
        conda:
            ENV
        shell:
            "vitpeft fetch-checkpoint {params.source} --out {output.checkpoint} > {log} 2>&1"
            " && stamp {output.stamp} {input.settings} {input.stamps}"

    localrules:
        fetch_checkpoint,
