# One training job per experiment: it reruns when its spec file changes or
# the data or backbone it reads were remade (their stamps).


rule train:
    input:
        settings=experiment_spec,
        stamps=train_stamps,
        data=ancient(TARGET_DATA),
        checkpoint=ancient(PATHS["checkpoint"]),
    output:
        run=directory(f"{RESULTS}/runs/{{exp}}"),
        stamp=result_stamp("train", "{exp}"),
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
        "OMP_NUM_THREADS={threads} vitpeft train --spec {input.settings} --out {output.run}"
        " --resume-dir {params.resume_dir} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"
