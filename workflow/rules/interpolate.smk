# WiSE-FT-style interpolation of every trained run with the pretrained model (config `interpolation`):
# one job per run scores every alpha (vitpeft eval-interpolation), the source k-NN on the curve's
# class-balanced subsample. Its key hashes the run, the data, the k-NN settings and the alpha grid:
# editing the grid reruns these jobs (and the report) only, never training. Its Python lives in
# common.smk; it reads nothing of evaluate.smk, so either can change alone.

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
                " --out {output.metrics}"
            )
