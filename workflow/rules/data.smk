# Datasets: the target datasets (downloaded, prepared once), ImageNet-1k's bank and
# queries (prepared from the user's copy), the curve's source subsample, or the
# demo's synthetic domains. Every output path holds its key (vitpeft.study.plan).

if PLAN.synthetic is not None:

    rule make_synthetic:
        output:
            data=directory(PLAN.synthetic.path),
        log:
            f"{LOGS}/make_synthetic-{PLAN.synthetic.key}.log",
        benchmark:
            f"{BENCH}/make_synthetic-{PLAN.synthetic.key}.tsv"
        params:
            config=CONFIG,
        conda:
            ENV
        shell:
            logged("vitpeft make-synthetic --config {params.config} --out {output.data}")

    localrules:
        make_synthetic,


rule download_target:
    # torchvision's own download and md5 checks, staged so that a killed download never
    # counts; runs where Snakemake runs (compute nodes often have no internet). Offline:
    # put the files in this folder yourself (`vitpeft list-targets` says which).
    output:
        root=directory(f"{PLAN.data}/downloads/{{dataset}}"),
    log:
        f"{LOGS}/download_target/{{dataset}}.log",
    benchmark:
        f"{BENCH}/download_target/{{dataset}}.tsv"
    params:
        args=download_target_args,
    conda:
        ENV
    shell:
        logged("vitpeft download-target {params.args} --root {output.root}")


rule prepare_target:
    # Every official split decoded once into the uint8 store (CIFAR and STL-10 at native size).
    input:
        unpack(prepare_target_inputs),
    output:
        data=directory(f"{PLAN.data}/targets/{{dataset}}/{{key}}"),
    log:
        f"{LOGS}/prepare_target/{{dataset}}-{{key}}.log",
    benchmark:
        f"{BENCH}/prepare_target/{{dataset}}-{{key}}.tsv"
    params:
        args=prepare_target_args,
    threads: resource("prepare", "cpus")
    resources:
        cpus_per_task=resource("prepare", "cpus"),
        mem_mb=resource("prepare", "mem_mb"),
        runtime=resource("prepare", "runtime"),
    conda:
        ENV
    shell:
        logged("vitpeft prepare-target {params.args} --out {output.data} --workers {threads}")


localrules:
    download_target,


if PLAN.imagenet_shards():
    IMAGENET = PLAN.source.path
    SHARDS = PLAN.source.info["shards"]

    rule prepare_imagenet_shard:
        # One of many independent single-CPU jobs; each decodes a contiguous range of the sorted
        # listing it computes itself. The ImageNet folder is no input: read-only, huge, and at
        # another path on another machine; the key holds the settings that matter.
        output:
            shard=directory(f"{IMAGENET}/{{part}}/shard-{{index}}-of-{{total}}"),
        log:
            f"{LOGS}/prepare_imagenet/{PLAN.source.key}/{{part}}-{{index}}-of-{{total}}.log",
        benchmark:
            f"{BENCH}/prepare_imagenet/{PLAN.source.key}/{{part}}-{{index}}-of-{{total}}.tsv"
        wildcard_constraints:
            part="bank|queries",
            index=r"\d{5}",
            total=r"\d{5}",
        params:
            root=CFG["source"]["imagenet_dir"] or "''",
            split=imagenet_split,
            per_class=imagenet_per_class,
            size=f"--resize {CFG['source']['resize']} --crop {CFG['source']['crop']}",
            out=shard_cache,
        threads: resource("shard", "cpus")
        resources:
            cpus_per_task=resource("shard", "cpus"),
            mem_mb=resource("shard", "mem_mb"),
            runtime=resource("shard", "runtime"),
        conda:
            ENV
        shell:
            logged(
                "vitpeft prepare-imagenet-shard --root {params.root} --split {params.split} --shard {wildcards.index}"
                " --shards {wildcards.total} --out {params.out} {params.per_class} {params.size} --workers {threads}"
            )

    rule index_imagenet:
        # Checks every shard came from one listing and covers its range, then writes the index the k-NN reads.
        input:
            unpack(made_or(f"{IMAGENET}/bank/meta.json", {"shards": [ancient(path) for path in PLAN.imagenet_shards()]})),
        output:
            bank=f"{IMAGENET}/bank/meta.json",
            queries=f"{IMAGENET}/queries/meta.json",
        log:
            f"{LOGS}/index_imagenet-{PLAN.source.key}.log",
        benchmark:
            f"{BENCH}/index_imagenet-{PLAN.source.key}.tsv"
        params:
            out=shard_cache,
            shards=f"--shards {SHARDS['bank']} --query-shards {SHARDS['queries']}",
        conda:
            ENV
        shell:
            logged("vitpeft index-imagenet --out {params.out} {params.shards}")

    localrules:
        index_imagenet,


if PLAN.curve_data is not None:

    rule subsample_source:
        # The curve scores every point on a class-balanced subsample of the bank and queries.
        input:
            unpack(made_or(PLAN.curve_data.path, {"source": ancient(PLAN.source.output)})),
        output:
            data=directory(PLAN.curve_data.path),
        log:
            f"{LOGS}/subsample_source-{PLAN.curve_data.key}.log",
        benchmark:
            f"{BENCH}/subsample_source-{PLAN.curve_data.key}.tsv"
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
            logged(
                "(vitpeft subsample --data {params.bank} --per-class {params.bank_k} --out {params.bank_out}"
                " && vitpeft subsample --data {params.queries} --per-class {params.queries_k} --out {params.queries_out})"
            )
