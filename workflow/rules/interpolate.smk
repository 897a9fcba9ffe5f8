# WiSE-FT-style interpolation of every trained run with the pretrained model (config `interpolation`):
# one job per run scores every alpha (vitpeft eval-interpolation: target top-1 on test and on the
# held-out data, the source k-NN on the curve's class-balanced subsample), then one job per run
# chooses its alpha (interpolation.choose_on) and scores it on the whole source bank (vitpeft
# eval-wise), the table's source column. The sweep's key hashes the run, the data, the k-NN settings
# and the alpha grid; the choice's, the sweep, the source data, the k-NN settings and choose_on:
# editing the grid or the choice reruns these jobs (and the report) only, never training. Their
# Python lives in common.smk; it reads nothing of evaluate.smk, so either can change alone.

INTERPOLATION_METRICS = f"{RESULTS}/metrics/{{dataset}}/{{exp}}/seed{{seed}}/interpolation-{{key}}.json"
INTERPOLATION_LOG = "{dataset}/{exp}/seed{seed}-{key}"


if PLAN.interpolates:

    rule eval_interpolation:
        input:
            unpack(interpolation_inputs),
        output:
            metrics=INTERPOLATION_METRICS,
        log:
            f"{LOGS}/eval_interpolation/{INTERPOLATION_LOG}.log",
        benchmark:
            f"{BENCH}/eval_interpolation/{INTERPOLATION_LOG}.tsv"
        params:
            device=device("evaluate"),
            resume_dir=CFG["resume_dir"],
            run=interpolation_run_dir,
            test=target_test,
            alphas=words(CFG["interpolation"]["alphas"]),
            source=interpolation_source_args(),
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
                "OMP_NUM_THREADS={threads} vitpeft eval-interpolation {params.device} --spec {params.run}/spec.yaml"
                " --run {params.run} --target-data {params.test} --alphas {params.alphas} {params.source}"
                " --out {output.metrics} --resume-dir {params.resume_dir}"
            )

    rule eval_wise:
        input:
            unpack(wise_inputs),
        output:
            metrics=f"{RESULTS}/metrics/{{dataset}}/{{exp}}/seed{{seed}}/wise-{{key}}.json",
        log:
            f"{LOGS}/eval_wise/{INTERPOLATION_LOG}.log",
        benchmark:
            f"{BENCH}/eval_wise/{INTERPOLATION_LOG}.tsv"
        params:
            device=device("evaluate"),
            run=wise_run_dir,
            sweep=wise_sweep,
            choose_on=CFG["interpolation"]["choose_on"],
            resume_dir=CFG["resume_dir"],
            source=(f"--bank {PLAN.source.info['bank']} --queries {PLAN.source.info['queries']} {KNN_ARGS} {NORM_ARGS}"
                    if PLAN.source is not None else ""),
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
                "OMP_NUM_THREADS={threads} vitpeft eval-wise {params.device} --spec {params.run}/spec.yaml"
                " --run {params.run} --sweep {params.sweep} --choose-on {params.choose_on} {params.source}"
                " --out {output.metrics} --resume-dir {params.resume_dir}"
            )
