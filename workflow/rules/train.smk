# One training job per (target dataset, experiment, seed). Its folder's name holds the
# key of its spec and inputs, so an edit that changes the run asks for a new folder.


rule train:
    input:
        unpack(train_inputs),
    output:
        run=directory(f"{RESULTS}/runs/{{dataset}}/{{exp}}/seed{{seed}}-{{key}}"),
    log:
        f"{LOGS}/train/{{dataset}}/{{exp}}/seed{{seed}}-{{key}}.log",
    benchmark:
        f"{BENCH}/train/{{dataset}}/{{exp}}/seed{{seed}}-{{key}}.tsv"
    params:
        device=device("train"),
        config=CONFIG,
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
        logged(
            "OMP_NUM_THREADS={threads} vitpeft train {params.device} --config {params.config} --dataset {wildcards.dataset}"
            " --experiment {wildcards.exp} --seed {wildcards.seed} --key {wildcards.key}"
            " --out {output.run} --resume-dir {params.resume_dir}"
        )
