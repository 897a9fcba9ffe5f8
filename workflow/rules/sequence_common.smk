# The task sequence's Python (workflow/rules/sequence.smk holds its rules): paths and the
# named input functions, as common.smk does for the grid. SEQ is None without a `sequence`.
# A step that trains what the grid plans is the grid's run (rule train), read from its folder.

SEQ = PLAN.sequence
SEQ_RUN = "" if SEQ is None else f"{SEQ.folder}/runs/{{exp}}/seed{{seed}}/step{{step}}-{{key}}"
SEQ_METRICS = "" if SEQ is None else f"{SEQ.folder}/metrics/{{exp}}/seed{{seed}}"
SEQ_LOG = "{exp}/seed{seed}/step{step}-{key}"


def seq_step(wildcards):
    return SEQ.step(wildcards.exp, wildcards.seed, wildcards.step)


def seq_train_inputs(wildcards):
    step = seq_step(wildcards)
    needs = {"data": ancient(SEQ.targets[step.task].output), "checkpoint": ancient(PLAN.backbone.path)}
    if step.spec.get("start") is not None:  # a shared step starts from the run before it; a per-task one does not
        needs["previous"] = ancient(step.spec["start"]["run"])
    return unless_made(step.train.path, needs)


def seq_eval_inputs(wildcards):
    step = seq_step(wildcards)
    chain = SEQ.chain(wildcards.exp, wildcards.seed)
    needs = {f"run{s.index}": ancient(s.train.path) for s in chain[: step.index]}
    needs.update({f"data{s.index}": ancient(SEQ.targets[s.task].output) for s in chain[: step.index]})
    if PLAN.features is not None:
        needs.update(source=ancient(PLAN.source.output), features=ancient(PLAN.features.path))
    return unless_made(step.metrics.path, needs)


def seq_route_inputs(wildcards):
    chain = SEQ.chain(wildcards.exp, wildcards.seed)
    needs = {f"run{s.index}": ancient(s.train.path) for s in chain}
    needs.update({f"data{s.index}": ancient(SEQ.targets[s.task].output) for s in chain})
    needs.update(source=ancient(PLAN.source.output), features=ancient(PLAN.features.path))
    return unless_made(SEQ.routers[(wildcards.exp, int(wildcards.seed))].path, needs)


SEQ_FEATURES = f"--pretrained-features {PLAN.features.path}" if PLAN.features is not None else ""


def seq_report_inputs(wildcards):
    nodes = [s.metrics for chain in SEQ.chains.values() for s in chain] + list(SEQ.routers.values())
    nodes += [PLAN.pretrained_source] if PLAN.pretrained_source is not None else []
    return unless_made(SEQ.report.path, [ancient(node.path) for node in nodes])


def sequence_files():
    """What `all` asks of a task sequence: its report (nothing without one)."""
    return [PLAN.sequence.report.path, *PLAN.sequence.files()] if PLAN.sequence is not None else []
