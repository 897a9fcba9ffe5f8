"""A task sequence's scores: one row of the accuracy matrix per step, and the router without a task id.

Row i (after training step i) holds the top-1 accuracy on the test set of
every task j <= i, and the source domain's k-NN (column 0). Task j is scored
with its own head, as trained at step j (task-incremental: no later step
trains it), on the backbone as it is after step i:

- shared variants (full, topk, lora, block expansion carrying their weights):
  step i's trained weights with task j's head put in place of task i's;
- per-task variants and linear: task j's own run (its adapter or blocks, its
  head), which no later step changes, so it is restored exactly.

The router (SimpleCIL / EASE style, LAMDA-PILOT): the pretrained backbone's
unit CLS features of each task's training set give one prototype per class
(their normalised mean), the source bank's give the source domain's. A test
image goes to the domain of its nearest prototype (cosine), i.e. to that
task's adapter and head, or to none (the source domain, the pretrained
backbone). A task image counts as right when it is routed to its own task and
that task's model classifies it right (a wrong route answers in another
task's label space: wrong); a source image when it is routed to the source
and the pretrained weighted k-NN gets it right. With the task id given (the
oracle route) the same count is the upper bound.
"""

import torch
import torch.nn.functional as F

from vitpeft.evaluation import evaluate, features, knn
from vitpeft.models.backbone import HEAD_PREFIX
from vitpeft.study import sequence as sequence_lib
from vitpeft.study import spec as spec_lib
from vitpeft.study.plan import UNTOUCHED
from vitpeft.training import devices
from vitpeft.training import model as models

SOURCE = sequence_lib.SOURCE


def resolved(step) -> dict:
    return spec_lib.resolve(step.spec, where=step.label)


def task_model(chain: list, after: int, task: int, device="cpu"):
    """The model that scores task `task` (1-based) after step `after`: see the module's docstring."""
    own, now = chain[task - 1], chain[after - 1]
    if task == after or now.variant == sequence_lib.PER_TASK or now.method in UNTOUCHED:
        return models.trained(resolved(own), own.train.path, device).eval()
    model = models.trained(resolved(now), now.train.path, "cpu")
    heads = models.weights_of(own.train.path)
    head = {name.removeprefix(HEAD_PREFIX): value for name, value in heads.items() if name.startswith(HEAD_PREFIX)}
    model.reset_classifier(own.spec["num_classes"])
    model.get_classifier().load_state_dict(head)
    return model.to(device).eval()


def test_set(seq, task: str):
    return features.load_prepared(f"{seq.targets[task].path}/test", f"test set of task {task}")


@torch.no_grad()
def score_step(plan, experiment: str, seed: int, index: int, device="cpu", batch_size=None,
               pretrained_features=None) -> dict:
    """Row `index` of the matrix of one (experiment, seed): every task seen so far, and the source domain."""
    device = devices.pick(device)
    seq = plan.sequence
    chain = seq.chain(experiment, seed)
    step = chain[index - 1]
    tasks = {}
    for j in range(1, index + 1):
        spec = resolved(chain[j - 1])
        test = test_set(seq, chain[j - 1].task)
        evaluate.check_labels(test, spec["num_classes"], chain[j - 1].task)
        model = task_model(chain, index, j, device)
        tasks[chain[j - 1].task] = evaluate.classifier_scores(model, test, spec, device, batch_size)[0]
        knn.log(f"{step.label}: task {j} ({chain[j - 1].task}) top-1 {tasks[chain[j - 1].task]:.2f}%")
    source = None
    if plan.source is not None:
        scored = evaluate.eval_source(
            resolved(step), step.train.path, plan.source.info["bank"], plan.source.info["queries"],
            ks=plan.knn["k"], temperature=plan.knn["temperature"], mean=plan.knn["mean"], std=plan.knn["std"],
            device=device, batch_size=batch_size, precision=plan.knn["precision"],
            pretrained_features=pretrained_features,
        )
        source = {key: scored[key] for key in ("top1", "routed_top1", "knn", "headline_k")}
    return {"experiment": experiment, "seed": int(seed), "step": index, "trained_on": step.task,
            "variant": step.variant, "method": step.method, "tasks": tasks, "source": source,
            "run": step.train.path, **evaluate.computed_by(device)}


# ---------------------------------------------------------------- the router


def class_prototypes(feats: torch.Tensor, labels) -> torch.Tensor:
    """One unit vector per class: the normalised mean of its unit features (SimpleCIL's prototype)."""
    labels = torch.as_tensor(labels).long().to(feats.device)
    count = int(labels.max()) + 1
    sums = torch.zeros(count, feats.shape[1], dtype=torch.float32, device=feats.device)
    sums.index_add_(0, labels, feats.float())
    return F.normalize(sums, dim=1)


def route(queries: torch.Tensor, prototypes: list) -> torch.Tensor:
    """Domain index (into `prototypes`, a list of [C_d, D] tensors) of each query's nearest class prototype."""
    owners = torch.cat([torch.full((len(p),), d, dtype=torch.long) for d, p in enumerate(prototypes)])
    nearest = (queries.float() @ torch.cat(prototypes).float().T).argmax(dim=1).cpu()
    return owners[nearest]


def routed_scores(routes, domains, right, names: list) -> dict:
    """Routing accuracy, end-to-end accuracy with the router and with the task id, per domain and over domains.

    routes, domains: the chosen and the true domain index of every image; right: whether the true domain's
    own model gets the image right. End to end, an image counts when routed to its own domain and right.
    """
    routes, domains, right = (torch.as_tensor(x) for x in (routes, domains, right))
    per = {}
    for d, name in enumerate(names):
        mine = domains == d
        hit = routes[mine] == d
        per[name] = {"images": int(mine.sum()), "routing": 100.0 * hit.double().mean().item(),
                     "routed": 100.0 * (hit & right[mine]).double().mean().item(),
                     "task_id": 100.0 * right[mine].double().mean().item()}
    mean = {key: sum(v[key] for v in per.values()) / len(per) for key in ("routing", "routed", "task_id")}
    return {"domains": per, "mean": mean}


@torch.no_grad()
def evaluate_router(plan, experiment: str, seed: int, device="cpu", batch_size=None, pretrained_features=None) -> dict:
    """Route the mixed stream (every task's test set, the source queries) of one per-task sequence."""
    device = devices.pick(device)
    seq = plan.sequence
    chain = seq.chain(experiment, seed)
    pretrained = models.pretrained(resolved(chain[0]), device).eval()
    size = plan.cfg["backbone"]["model"]["img_size"]
    mean, std = plan.knn["mean"], plan.knn["std"]  # one preprocessing for every image: the backbone's own
    source = features.load_source(plan.source.info["bank"], plan.source.info["queries"], mean, std,
                                  plan.knn["precision"])
    untouched = None
    if pretrained_features is not None:
        untouched = features.cached(pretrained_features, features.provenance(resolved(chain[0]), source, device), device)
    if untouched is None:
        untouched = features.compute(pretrained, source, size, device, batch_size, "the pretrained backbone")
    bank, queries = untouched
    k = evaluate.headline(plan.knn["k"])
    votes = knn.knn_predict(bank, source.bank.labels, queries, [k], plan.knn["temperature"], source.num_classes,
                            device=device)[k]
    rights = [votes.cpu() == torch.as_tensor(source.queries.labels).long()]
    prototypes = [class_prototypes(bank, source.bank.labels)]
    streams = [queries]
    for step in chain:
        spec = resolved(step)
        folder = seq.targets[step.task].path
        extract = lambda images: knn.extract(pretrained, images, size, mean, std, batch_size, device)  # noqa: E731
        train = features.load_prepared(f"{folder}/train", f"training set of task {step.task}")
        test = test_set(seq, step.task)
        prototypes.append(class_prototypes(extract(train.images), train.labels))
        streams.append(extract(test.images))
        model = task_model(chain, len(chain), step.index, device)
        predicted = knn.map_batches(model, lambda x: model(x).argmax(dim=1), test.images, size, spec["data"]["mean"],
                                    spec["data"]["std"], batch_size, device).cpu()
        rights.append(predicted == torch.as_tensor(test.labels).long())
    routes = torch.cat([route(stream, prototypes) for stream in streams])
    domains = torch.cat([torch.full((len(stream),), d, dtype=torch.long) for d, stream in enumerate(streams)])
    names = [SOURCE, *seq.tasks]
    scores = routed_scores(routes, domains, torch.cat(rights), names)
    knn.log(f"{experiment}/seed{seed}: routing {scores['mean']['routing']:.2f}%, end to end "
            f"{scores['mean']['routed']:.2f}% (task id given: {scores['mean']['task_id']:.2f}%)")
    return {"experiment": experiment, "seed": int(seed), **scores, "headline_k": k,
            "rule": "nearest class prototype, pretrained unit CLS features, cosine", **evaluate.computed_by(device)}
