# Datasets: the target datasets (downloaded, prepared once), ImageNet-1k's bank and
# queries (prepared from the user's copy), the curve's source subsample, or the
# demo's synthetic domains. Every output path holds its key (vitpeft.plan).

if PLAN.synthetic is not None:

    rule make_synthetic:
        output:
            data=directory(PLAN.synthetic.path),
        log:
            f"{LOGS}/make_synthetic-{PLAN.synthetic.key}.log",
        params:
            config=CONFIG,
        conda:
            ENV
        shell:
            "vitpeft make-synthetic --config {params.config} --out {output.data} > {log} 2>&1"

    localrules:
        make_synthetic,


rule download_target:
    # torchvision's own download and integrity checks; runs where Snakemake runs (compute
    # nodes often have no internet). Offline: put the files in this folder yourself.
    output:
        root=directory(f"{PLAN.data}/downloads/{{dataset}}"),
    log:
        f"{LOGS}/download_target/{{dataset}}.log",
    conda:
        ENV
    shell:
        "vitpeft download-target --dataset {wildcards.dataset} --root {output.root} > {log} 2>&1"


rule prepare_target:
    input:
        root=ancient(f"{PLAN.data}/downloads/{{dataset}}"),
    output:
        data=directory(f"{PLAN.data}/targets/{{dataset}}/{{key}}"),
    log:
        f"{LOGS}/prepare_target/{{dataset}}-{{key}}.log",
    threads: resource("prepare", "cpus")
    resources:
        cpus_per_task=resource("prepare", "cpus"),
        mem_mb=resource("prepare", "mem_mb"),
        runtime=resource("prepare", "runtime"),
    conda:
        ENV
    shell:
        "vitpeft prepare-target --dataset {wildcards.dataset} --root {input.root} --out {output.data}"
        " --workers {threads} > {log} 2>&1"


if PLAN.source is not None and CFG["source"]["dataset"] == "imagenet":

    rule prepare_imagenet:
        # The ImageNet folder itself is no input: read-only, huge, and at another path on
        # another machine; the key holds the settings that matter.
        output:
            data=directory(PLAN.source.path),
        log:
            f"{LOGS}/prepare_imagenet-{PLAN.source.key}.log",
        params:
            root=CFG["source"]["imagenet_dir"] or "''",
            bank=f"--bank-per-class {CFG['source']['bank_per_class']}" if CFG["source"]["bank_per_class"] else "",
            queries=f"--query-per-class {CFG['source']['query_per_class']}" if CFG["source"]["query_per_class"] else "",
            size=f"--resize {CFG['source']['resize']} --crop {CFG['source']['crop']}",
        threads: resource("prepare", "cpus")
        resources:
            cpus_per_task=resource("prepare", "cpus"),
            mem_mb=resource("prepare", "mem_mb"),
            runtime=resource("prepare", "runtime"),
        conda:
            ENV
        shell:
            "vitpeft prepare-imagenet --root {params.root} --out {output.data} --workers {threads}"
            " {params.bank} {params.queries} {params.size} > {log} 2>&1"


if PLAN.curve_data is not None:

    rule subsample_source:
        # The curve scores every point on a class-balanced subsample of the bank and queries.
        input:
            source=ancient(PLAN.source.output),
        output:
            data=directory(PLAN.curve_data.path),
        log:
            f"{LOGS}/subsample_source-{PLAN.curve_data.key}.log",
        params:
            bank=PLAN.source.info["bank"],
            queries=PLAN.source.info["queries"],
            bank_out=PLAN.curve_data.info["bank"],
            queries_out=PLAN.curve_data.info["queries"],
            bank_k=CFG["curve"]["bank_per_class"],
            queries_k=CFG["curve"]["query_per_class"],
        conda:
            ENV
        shell:
            "(vitpeft subsample --data {params.bank} --per-class {params.bank_k} --out {params.bank_out}"
            " && vitpeft subsample --data {params.queries} --per-class {params.queries_k} --out {params.queries_out})"
            " > {log} 2>&1"
