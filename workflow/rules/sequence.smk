# Task sequences (config `sequence`, vitpeft.study.sequence; input functions in
# sequence_common.smk): one training job per
# (experiment, seed, step), each starting from the previous step's run (its key is part of
# this step's key), one job scoring each step's row of the accuracy matrix, a router job per
# per-task experiment, and the sequence report. No sequence in the config: no rules here.

if PLAN.sequence is not None:

    rule make_synthetic_task:
        output:
            data=directory(f"{PLAN.data}/synthetic-tasks/{{task}}/{{key}}"),
        log:
            f"{LOGS}/make_synthetic_task/{{task}}-{{key}}.log",
        benchmark:
            f"{BENCH}/make_synthetic_task/{{task}}-{{key}}.tsv"
        params:
            config=CONFIG,
        conda:
            ENV
        shell:
            logged("vitpeft make-synthetic-task --config {params.config} --task {wildcards.task} --out {output.data}")

    wildcard_constraints:
        step=r"\d+",
        task=NAME,

    rule train_step:
        input:
            unpack(seq_train_inputs),
        output:
            run=directory(SEQ_RUN),
        log:
            f"{LOGS}/train_step/{SEQ_LOG}.log",
        benchmark:
            f"{BENCH}/train_step/{SEQ_LOG}.tsv"
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
                "OMP_NUM_THREADS={threads} vitpeft train-step {params.device} --config {params.config}"
                " --experiment {wildcards.exp} --seed {wildcards.seed} --step {wildcards.step} --key {wildcards.key}"
                " --out {output.run} --resume-dir {params.resume_dir}"
            )

    rule eval_step:
        input:
            unpack(seq_eval_inputs),
        output:
            metrics=f"{SEQ_METRICS}/step{{step}}-{{key}}.json",
        log:
            f"{LOGS}/eval_step/{SEQ_LOG}.log",
        benchmark:
            f"{BENCH}/eval_step/{SEQ_LOG}.tsv"
        params:
            device=device("evaluate"),
            resume_dir=CFG["resume_dir"],
            config=CONFIG,
            features=SEQ_FEATURES,
        threads: resource("evaluate", "cpus")
        resources:
            gpu=resource("evaluate", "gpu"),
            cpus_per_task=resource("evaluate", "cpus"),
            mem_mb=resource("evaluate", "mem_mb"),
            runtime=resource("evaluate", "runtime"),
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft eval-step {params.device} --config {params.config}"
                " --experiment {wildcards.exp} --seed {wildcards.seed} --step {wildcards.step} --key {wildcards.key}"
                " {params.features} --out {output.metrics} --resume-dir {params.resume_dir}"
            )

    rule route:
        input:
            unpack(seq_route_inputs),
        output:
            metrics=f"{SEQ_METRICS}/router-{{key}}.json",
        log:
            f"{LOGS}/route/{{exp}}/seed{{seed}}-{{key}}.log",
        benchmark:
            f"{BENCH}/route/{{exp}}/seed{{seed}}-{{key}}.tsv"
        params:
            device=device("evaluate"),
            resume_dir=CFG["resume_dir"],
            config=CONFIG,
            features=SEQ_FEATURES,
        threads: resource("evaluate", "cpus")
        resources:
            gpu=resource("evaluate", "gpu"),
            cpus_per_task=resource("evaluate", "cpus"),
            mem_mb=resource("evaluate", "mem_mb"),
            runtime=resource("evaluate", "runtime"),
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft route {params.device} --config {params.config}"
                " --experiment {wildcards.exp} --seed {wildcards.seed} --key {wildcards.key}"
                " {params.features} --out {output.metrics} --resume-dir {params.resume_dir}"
            )

    rule sequence_report:
        # update(): Snakemake keeps the previous report's files while this job runs and puts them back if it
        # fails (vitpeft writes none before all are made), so a bad input never leaves the study without one.
        input:
            seq_report_inputs,
        output:
            record=SEQ.report.path,
            files=[update(path) for path in SEQ.files()],
        log:
            f"{LOGS}/sequence_report-{SEQ.report.key}.log",
        benchmark:
            f"{BENCH}/sequence_report-{SEQ.report.key}.tsv"
        params:
            config=CONFIG,
        conda:
            ENV
        shell:
            logged("vitpeft sequence-report --config {params.config} --record {output.record}")

    localrules:
        sequence_report,
        make_synthetic_task,

