# Two scores per experiment and for the untouched backbone (`pretrained`,
# evaluated without --run): target accuracy (the k-NN for the head-less
# backbone), and DINO's weighted k-NN on the source domain.


rule eval_target:
    input:
        settings=eval_target_settings,
        stamps=eval_target_stamps,
        run=eval_data,
        data=ancient(TARGET_DATA),
        checkpoint=ancient(PATHS["checkpoint"]),
    output:
        metrics=metrics_path("{exp}", "target"),
        stamp=result_stamp("eval_target", "{exp}"),
    log:
        f"{LOGS}/eval_target/{{exp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval_target/{{exp}}.tsv"
    params:
        spec=experiment_spec,
        run=run_arg,
        knn=target_knn_arg,
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
        "OMP_NUM_THREADS={threads} vitpeft eval-target --spec {params.spec} {params.run} {params.knn}"
        " --data {params.data} --out {output.metrics} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"


rule eval_source:
    input:
        settings=eval_source_settings,
        stamps=eval_source_stamps,
        run=eval_data,
        data=ancient(SOURCE_DATA),
        checkpoint=ancient(PATHS["checkpoint"]),
    output:
        metrics=metrics_path("{exp}", "source"),
        stamp=result_stamp("eval_source", "{exp}"),
    log:
        f"{LOGS}/eval_source/{{exp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval_source/{{exp}}.tsv"
    params:
        spec=experiment_spec,
        run=run_arg,
        bank=PATHS["source_bank"],
        queries=PATHS["source_queries"],
        knn=f"{KNN_ARGS} --mean {words(CFG['source']['mean'])} --std {words(CFG['source']['std'])}",
    threads: resource("evaluate", "cpus")
    resources:
        gpu=resource("evaluate", "gpu"),
        cpus_per_task=resource("evaluate", "cpus"),
        mem_mb=resource("evaluate", "mem_mb"),
        runtime=resource("evaluate", "runtime"),
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} vitpeft eval-source --spec {params.spec} {params.run}"
        " --bank {params.bank} --queries {params.queries} {params.knn} --out {output.metrics} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"
