# Two scores per run and for the untouched backbone (`pretrained`): target accuracy
# (the head-less backbone's is a k-NN), and DINO's weighted k-NN on the source domain.
# The untouched backbone's source features are extracted once (extract_features) and
# serve the pretrained row, linear probing (whose backbone is the pretrained one) and
# every routed view; each other fine-tuned backbone costs one source pass.

EVAL_RESOURCES = dict(
    gpu=resource("evaluate", "gpu"),
    cpus_per_task=resource("evaluate", "cpus"),
    mem_mb=resource("evaluate", "mem_mb"),
    runtime=resource("evaluate", "runtime"),
)
METRICS = f"{RESULTS}/metrics/{{dataset}}/{{exp}}/seed{{seed}}"
EVAL_LOG = "{dataset}/{exp}/seed{seed}-{key}"
EVAL_DEVICE = device("evaluate")


rule eval_target:
    input:
        unpack(eval_inputs("target")),
    output:
        metrics=f"{METRICS}/target-{{key}}.json",
    log:
        f"{LOGS}/eval_target/{EVAL_LOG}.log",
    benchmark:
        f"{BENCH}/eval_target/{EVAL_LOG}.tsv"
    params:
        device=EVAL_DEVICE,
        resume_dir=CFG["resume_dir"],
        run=eval_run_dir,
        test=target_test,
    threads: resource("evaluate", "cpus")
    resources:
        **EVAL_RESOURCES,
    conda:
        ENV
    shell:
        logged(
            "OMP_NUM_THREADS={threads} vitpeft eval-target {params.device} --spec {params.run}/spec.yaml --run {params.run}"
            " --data {params.test} --out {output.metrics} --resume-dir {params.resume_dir}"
        )


rule eval_target_pretrained:
    input:
        unpack(pretrained_target_inputs),
    output:
        metrics=f"{RESULTS}/metrics/{{dataset}}/{PRETRAINED}/target-{{key}}.json",
    log:
        f"{LOGS}/eval_target/{{dataset}}/{PRETRAINED}-{{key}}.log",
    benchmark:
        f"{BENCH}/eval_target/{{dataset}}/{PRETRAINED}-{{key}}.tsv"
    params:
        device=EVAL_DEVICE,
        resume_dir=CFG["resume_dir"],
        config=CONFIG,
        pretrained=PRETRAINED,
        test=target_test,
        key=pretrained_target_key,
        knn=KNN_ARGS,
    threads: resource("evaluate", "cpus")
    resources:
        **EVAL_RESOURCES,
    conda:
        ENV
    shell:
        logged(
            "OMP_NUM_THREADS={threads} vitpeft eval-target {params.device} --config {params.config} --experiment {params.pretrained}"
            " --dataset {wildcards.dataset} --data {params.test} {params.knn} --out {output.metrics} --resume-dir {params.resume_dir}"
        )


if PLAN.features is not None:

    rule extract_features:
        input:
            unpack(made_or(PLAN.features.path, {"source": ancient(PLAN.source.output),
                                                "checkpoint": ancient(PLAN.backbone.path)})),
        output:
            features=directory(PLAN.features.path),
        log:
            f"{LOGS}/extract_features-{PLAN.features.key}.log",
        benchmark:
            f"{BENCH}/extract_features-{PLAN.features.key}.tsv"
        params:
            device=EVAL_DEVICE,
            resume_dir=CFG["resume_dir"],
            config=CONFIG,
            pretrained=PRETRAINED,
            bank=PLAN.source.info["bank"],
            queries=PLAN.source.info["queries"],
            norm=NORM_ARGS,
        threads: resource("evaluate", "cpus")
        resources:
            **EVAL_RESOURCES,
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft extract-features {params.device} --config {params.config} --experiment {params.pretrained}"
                " --bank {params.bank} --queries {params.queries} {params.norm} --out {output.features} --resume-dir {params.resume_dir}"
            )

    rule eval_source_pretrained:
        input:
            unpack(made_or(PLAN.pretrained_source.path, {"features": ancient(PLAN.features.path)})),
        output:
            metrics=PLAN.pretrained_source.path,
        log:
            f"{LOGS}/eval_source/{PRETRAINED}-{PLAN.pretrained_source.key}.log",
        benchmark:
            f"{BENCH}/eval_source_pretrained-{PLAN.pretrained_source.key}.tsv"
        params:
            device=EVAL_DEVICE,
            resume_dir=CFG["resume_dir"],
            config=CONFIG,
            pretrained=PRETRAINED,
            bank=PLAN.source.info["bank"],
            queries=PLAN.source.info["queries"],
            features=PLAN.features.path,
            knn=f"{KNN_ARGS} {NORM_ARGS}",
        threads: resource("evaluate", "cpus")
        resources:
            **EVAL_RESOURCES,
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft eval-source {params.device} --config {params.config} --experiment {params.pretrained}"
                " --bank {params.bank} --queries {params.queries} --pretrained-features {params.features}"
                " {params.knn} --out {output.metrics} --resume-dir {params.resume_dir}"
            )

    rule eval_source:
        input:
            unpack(eval_inputs("source")),
        output:
            metrics=f"{METRICS}/source-{{key}}.json",
        log:
            f"{LOGS}/eval_source/{EVAL_LOG}.log",
        benchmark:
            f"{BENCH}/eval_source/{EVAL_LOG}.tsv"
        params:
            device=EVAL_DEVICE,
            resume_dir=CFG["resume_dir"],
            run=eval_source_run_dir,
            bank=PLAN.source.info["bank"],
            queries=PLAN.source.info["queries"],
            features=PLAN.features.path,
            knn=f"{KNN_ARGS} {NORM_ARGS}",
        threads: resource("evaluate", "cpus")
        resources:
            **EVAL_RESOURCES,
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft eval-source {params.device} --spec {params.run}/spec.yaml --run {params.run}"
                " --bank {params.bank} --queries {params.queries} --pretrained-features {params.features}"
                " {params.knn} --out {output.metrics} --resume-dir {params.resume_dir}"
            )


if CFG["curve"]["steps"]:

    rule eval_curve:
        # One job per run scores every curve point: one model load, one process.
        input:
            unpack(eval_inputs("curve")),
        output:
            metrics=f"{METRICS}/curve-{{key}}.json",
        log:
            f"{LOGS}/eval_curve/{EVAL_LOG}.log",
        benchmark:
            f"{BENCH}/eval_curve/{EVAL_LOG}.tsv"
        params:
            device=EVAL_DEVICE,
            resume_dir=CFG["resume_dir"],
            run=eval_curve_run_dir,
            test=target_test,
            source=(
                f"--bank {PLAN.curve_data.info['bank']} --queries {PLAN.curve_data.info['queries']} {KNN_ARGS} {NORM_ARGS}"
                if PLAN.curve_data is not None
                else ""
            ),
        threads: resource("evaluate", "cpus")
        resources:
            **EVAL_RESOURCES,
        conda:
            ENV
        shell:
            logged(
                "OMP_NUM_THREADS={threads} vitpeft eval-curve {params.device} --spec {params.run}/spec.yaml --run {params.run}"
                " --target-data {params.test} {params.source} --out {output.metrics} --resume-dir {params.resume_dir}"
            )
