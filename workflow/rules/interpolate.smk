# WiSE-FT-style interpolation of every trained run with the pretrained model (config `interpolation`):
# one job per run scores every alpha (vitpeft eval-interpolation), the source k-NN on the curve's
# class-balanced subsample. Its key hashes the run, the data, the k-NN settings and the alpha grid:
# editing the grid reruns these jobs (and the report) only, never training.


def interpolation_inputs(wildcards):
    run = run_by_eval(wildcards, "interpolation")
    needs = {"run": ancient(run.train.path), "data": ancient(PLAN.targets[run.dataset].output),
             "checkpoint": ancient(PLAN.backbone.path)}
    if PLAN.curve_data is not None:
        needs.update(subset=ancient(PLAN.curve_data.path))
    return unless_made(run.interpolation.path, needs)


def interpolation_run_dir(wildcards):
    return run_by_eval(wildcards, "interpolation").train.path


def interpolation_source_args():
    if PLAN.curve_data is None:
        return ""
    info, curve = PLAN.curve_data.info, CFG["curve"]
    described = f"subsample: {curve['bank_per_class']} bank and {curve['query_per_class']} query images per class"
    return f"--bank {info['bank']} --queries {info['queries']} --source-data '{described}' {KNN_ARGS} {NORM_ARGS}"


if PLAN.interpolates:

    rule eval_interpolation:
        input:
            unpack(interpolation_inputs),
        output:
            metrics=f"{METRICS}/interpolation-{{key}}.json",
        log:
            f"{LOGS}/eval_interpolation/{EVAL_LOG}.log",
        benchmark:
            f"{BENCH}/eval_interpolation/{EVAL_LOG}.tsv"
        params:
            device=EVAL_DEVICE,
            run=interpolation_run_dir,
            test=target_test,
            alphas=words(CFG["interpolation"]["alphas"]),
            source=interpolation_source_args(),
        threads: resource("evaluate", "cpus")
        resources:
            **EVAL_RESOURCES,
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft eval-interpolation {params.device} --spec {params.run}/spec.yaml"
                " --run {params.run} --target-data {params.test} --alphas {params.alphas} {params.source}"
                " --out {output.metrics}"
            )
