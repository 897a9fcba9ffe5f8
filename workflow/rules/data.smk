# Datasets: CIFAR-100 (downloaded, prepared once), ImageNet-1k bank and queries
# (prepared from the user's copy), or the demo's synthetic domains.
# Every rule: `settings` and `stamps` in, its data and a `stamp` out (common.smk).


rule download_cifar100:
    input:
        settings=stage_path("cifar100"),
        stamps=[],
    output:
        archive=PATHS["cifar100_archive"],
        stamp=data_stamp("download_cifar100"),
    log:
        f"{LOGS}/download_cifar100.log",
    params:
        url=CFG["target"]["url"],
        md5=f"--md5 {CFG['target']['md5']}" if CFG["target"]["md5"] else "",
    conda:
        ENV
    shell:
        "vitpeft download --url {params.url} --out {output.archive} {params.md5} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"


rule prepare_cifar100:
    input:
        settings=[],
        stamps=data_stamp("download_cifar100"),
        archive=ancient(PATHS["cifar100_archive"]),
    output:
        data=directory(PATHS["cifar100"]),
        stamp=data_stamp("prepare_cifar100"),
    log:
        f"{LOGS}/prepare_cifar100.log",
    conda:
        ENV
    shell:
        "vitpeft prepare-cifar100 --archive {input.archive} --out {output.data} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"


rule make_synthetic:
    input:
        settings=stage_path("synthetic"),
        stamps=[],
    output:
        data=directory(PATHS["synthetic"]),
        stamp=data_stamp("make_synthetic"),
    log:
        f"{LOGS}/make_synthetic.log",
    params:
        config=RESOLVED_CONFIG,
    conda:
        ENV
    shell:
        "vitpeft make-synthetic --config {params.config} --out {output.data} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"


rule prepare_imagenet:
    # The ImageNet folder itself is no input: it is read-only, huge, and its
    # path may differ between machines; the settings file tracks what matters.
    input:
        settings=stage_path("imagenet"),
        stamps=[],
    output:
        data=directory(PATHS["imagenet"]),
        stamp=data_stamp("prepare_imagenet"),
    log:
        f"{LOGS}/prepare_imagenet.log",
    params:
        root=CFG["source"]["imagenet_dir"],
        bank=f"--bank-per-class {CFG['source']['bank_per_class']}" if CFG["source"]["bank_per_class"] else "",
        queries=f"--query-per-class {CFG['source']['query_per_class']}" if CFG["source"]["query_per_class"] else "",
        size=f"--resize {CFG['source']['resize']} --crop {CFG['source']['crop']}",
    threads: resource("evaluate", "cpus")
    resources:
        cpus_per_task=resource("evaluate", "cpus"),
        mem_mb=resource("evaluate", "mem_mb"),
        runtime=resource("evaluate", "runtime"),
    conda:
        ENV
    shell:
        "vitpeft prepare-imagenet --root {params.root} --out {output.data} --workers {threads}"
        " {params.bank} {params.queries} {params.size} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"


localrules:
    download_cifar100,
    prepare_cifar100,
    make_synthetic,
