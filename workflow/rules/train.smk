# One training job per experiment. Its only non-ancient input is its spec file,
# which changes only when the experiment's settings do.


rule train:
    input:
        spec=train_spec,
        data=ancient(TARGET_DATA),
        checkpoint=ancient(PATHS["checkpoint"]),
    output:
        directory(f"{RESULTS}/runs/{{exp}}"),
    log:
        f"{LOGS}/train/{{exp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{exp}}.tsv"
    wildcard_constraints:
        exp=_alternation(EXPERIMENTS),
    params:
        resume_dir=CFG["resume_dir"],
    threads: resource("train", "cpus")
    resources:
        gpu=resource("train", "gpu"),
        cpus_per_task=resource("train", "cpus"),
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} vitpeft train --spec {input.spec} --out {output}"
        " --resume-dir {params.resume_dir} > {log} 2>&1"
