# Two scores per experiment and for the untouched backbone (`pretrained`):
# target accuracy, and DINO's weighted k-NN on the source domain.


rule record_pretrained:
    # The untouched backbone has no run; this record of its spec stands in, so
    # its evaluations rerun only when that spec changes (like a trained run's).
    input:
        spec_path(PRETRAINED),
    output:
        f"{RESULTS}/pretrained/spec.yaml",
    log:
        f"{LOGS}/record_pretrained.log",
    shell:
        "cp {input} {output} 2> {log}"


rule eval_target:
    input:
        spec=eval_spec,
        run=run_input,
        data=ancient(TARGET_DATA),
        checkpoint=ancient(PATHS["checkpoint"]),
    output:
        metrics_path("{exp}", "target"),
    log:
        f"{LOGS}/eval_target/{{exp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval_target/{{exp}}.tsv"
    params:
        run=run_arg,
        data=PATHS["target_test"],
    threads: resource("evaluate", "cpus")
    resources:
        gpu=resource("evaluate", "gpu"),
        cpus_per_task=resource("evaluate", "cpus"),
        mem_mb=resource("evaluate", "mem_mb"),
        runtime=resource("evaluate", "runtime"),
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} vitpeft eval-target --spec {input.spec} {params.run}"
        " --data {params.data} --out {output} > {log} 2>&1"


rule eval_source:
    input:
        spec=eval_spec,
        run=run_input,
        data=ancient(SOURCE_DATA),
        checkpoint=ancient(PATHS["checkpoint"]),
        settings=stage_path("source_eval"),
    output:
        metrics=metrics_path("{exp}", "source"),
        stamp=stamp_path(metrics_path("{exp}", "source")),
    log:
        f"{LOGS}/eval_source/{{exp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval_source/{{exp}}.tsv"
    params:
        run=run_arg,
        bank=PATHS["source_bank"],
        queries=PATHS["source_queries"],
        knn=(
            f"--k {words(CFG['source']['k'])} --temperature {CFG['source']['temperature']}"
            f" --mean {words(CFG['source']['mean'])} --std {words(CFG['source']['std'])}"
        ),
    threads: resource("evaluate", "cpus")
    resources:
        gpu=resource("evaluate", "gpu"),
        cpus_per_task=resource("evaluate", "cpus"),
        mem_mb=resource("evaluate", "mem_mb"),
        runtime=resource("evaluate", "runtime"),
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} vitpeft eval-source --spec {input.spec} {params.run}"
        " --bank {params.bank} --queries {params.queries} {params.knn} --out {output.metrics} > {log} 2>&1"
        " && cp {input.settings} {output.stamp}"


localrules:
    record_pretrained,
