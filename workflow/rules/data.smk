# Datasets: CIFAR-100 (downloaded, prepared once), ImageNet-1k bank and queries
# (prepared from the user's copy), or the demo's synthetic domains.


rule download_cifar100:
    output:
        PATHS["cifar100_archive"],
    log:
        f"{LOGS}/download_cifar100.log",
    params:
        url=CFG["target"]["url"],
        md5=f"--md5 {CFG['target']['md5']}" if CFG["target"]["md5"] else "",
    conda:
        ENV
    shell:
        "vitpeft download --url {params.url} --out {output} {params.md5} > {log} 2>&1"


rule prepare_cifar100:
    input:
        ancient(PATHS["cifar100_archive"]),
    output:
        directory(PATHS["cifar100"]),
    log:
        f"{LOGS}/prepare_cifar100.log",
    conda:
        ENV
    shell:
        "vitpeft prepare-cifar100 --archive {input} --out {output} > {log} 2>&1"


rule make_synthetic:
    input:
        settings=stage_path("synthetic"),
    output:
        data=directory(PATHS["synthetic"]),
        stamp=stamp_path(PATHS["synthetic"]),
    log:
        f"{LOGS}/make_synthetic.log",
    conda:
        ENV
    shell:
        "vitpeft make-synthetic --config {input.settings} --out {output.data} > {log} 2>&1"
        " && cp {input.settings} {output.stamp}"


rule prepare_imagenet:
    # The ImageNet folder itself is no input: it is read-only, huge, and its
    # path may differ between machines; the settings file tracks what matters.
    input:
        settings=stage_path("imagenet"),
    output:
        data=directory(PATHS["imagenet"]),
        stamp=stamp_path(PATHS["imagenet"]),
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
        " && cp {input.settings} {output.stamp}"


localrules:
    download_cifar100,
    prepare_cifar100,
    make_synthetic,
