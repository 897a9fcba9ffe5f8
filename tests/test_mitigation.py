"""The field's remedies for forgetting as methods: L2-SP's penalty and LP-FT's two stages, on tiny ViTs."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from test_train import colours, make_spec, run_in_process  # noqa: F401  (colours is a fixture)
from vitpeft.errors import VitpeftError
from vitpeft.methods import arguments, registry
from vitpeft.training import model as model_lib
from vitpeft.training import stages
from vitpeft.training.train import train


def test_l2sp_gradient_is_the_cross_entropy_gradient_plus_alpha_times_the_drift(tmp_path, colours):
    alpha, beta = 0.3, 0.2
    spec = make_spec(colours, "l2sp", {"alpha": alpha, "beta": beta})
    model = model_lib.for_training(spec)
    penalty = registry.penalty(model)
    pretrained = {name: param.detach().clone() for name, param in model.named_parameters()}
    with torch.no_grad():  # move every weight away from the pretrained ones, as training would
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4

    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    penalty.add_grad_()
    ours = {name: param.grad.clone() for name, param in model.named_parameters()}

    model.zero_grad()  # the published loss, differentiated by autograd
    drift = sum(((p - pretrained[n]) ** 2).sum() for n, p in model.named_parameters() if not n.startswith("head."))
    head = sum((p**2).sum() for n, p in model.named_parameters() if n.startswith("head."))
    loss = F.cross_entropy(model(x), y) + alpha / 2 * drift + beta / 2 * head
    loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(ours[name], param.grad, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(penalty.value(), (alpha / 2 * drift + beta / 2 * head).detach(), rtol=1e-5, atol=0)
    assert penalty.reference_bytes() == 4 * sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))


def test_l2sp_with_zero_weights_trains_exactly_as_full(tmp_path, colours):
    full = run_in_process(make_spec(colours, "full", steps=6), tmp_path / "full").model.state_dict()
    l2sp = run_in_process(make_spec(colours, "l2sp", {"alpha": 0, "beta": 0}, steps=6), tmp_path / "l2sp")
    assert all(torch.equal(full[k], v) for k, v in l2sp.model.state_dict().items())


def test_l2sp_keeps_the_backbone_closer_to_the_pretrained_weights(tmp_path, colours):
    pretrained = dict(model_lib.pretrained(make_spec(colours)).named_parameters())
    drift = {}
    for alpha in (0.0, 5.0):
        model = run_in_process(make_spec(colours, "l2sp", {"alpha": alpha, "beta": 0}), tmp_path / str(alpha)).model
        drift[alpha] = sum(((p - pretrained[n]) ** 2).sum().item() for n, p in model.named_parameters()
                           if not n.startswith("head."))
    assert drift[5.0] < drift[0.0]


@pytest.mark.parametrize("anchor", [None, "pretrained", "start"])
def test_l2sp_after_a_start_anchors_at_the_pretrained_weights_unless_told_the_start(tmp_path, colours, anchor):
    """A shared task-sequence step starts from the run before it. L2-SP's w_0 is then the pretrained backbone
    (the default: the study measures what is kept of pre-training), or with anchor: start the weights it starts
    from; the training loop builds its penalty so."""
    from vitpeft.study import spec as spec_lib
    from vitpeft.training.draws import load_data
    from vitpeft.training.train import Run

    args = {"alpha": 0.1, **({"anchor": anchor} if anchor else {})}
    first = make_spec(colours, "l2sp", args, steps=6)
    before = train(first, tmp_path / "first", tmp_path / ".resume", device="cpu")
    step = spec_lib.resolve({**first, "name": "tiny_l2sp.step2",
                             "start": {"run": str(before), "spec_hash": spec_lib.spec_hash(first)}})
    run = Run(step, load_data(step, torch.device("cpu")), torch.device("cpu"))
    names = [name for name, param in run.model.named_parameters() if param.requires_grad and not name.startswith("head.")]
    started = {name: param.detach().clone() for name, param in run.model.named_parameters()}
    pretrained = dict(model_lib.pretrained(step).named_parameters())
    expected = started if anchor == "start" else pretrained
    assert len(run.penalty.reference) == len(names)
    assert all(torch.equal(ref, expected[name]) for ref, name in zip(run.penalty.reference, names))
    assert any(not torch.equal(started[name], pretrained[name]) for name in names)  # the two anchors differ here


def test_lpft_second_stage_starts_from_the_probe_head_and_the_untouched_backbone(tmp_path, colours):
    probe = 8
    args = {"probe_steps": probe, "probe_lr": 0.1, "probe_warmup_steps": 2}
    spec = make_spec(colours, "lpft", args, steps=14, curve_steps=[probe])
    run = train(spec, tmp_path / "lpft", tmp_path / ".resume", device="cpu")
    at_switch = load_file(str(run / "curve" / f"step_{probe:06d}.safetensors"))
    # the probe alone: a linear probe of `probe` steps at the probe's rate and warm-up, same seed
    linear = run_in_process(make_spec(colours, "linear", steps=probe, lr=0.1, warmup_steps=2), tmp_path / "lin")
    pretrained = model_lib.pretrained(spec).state_dict()
    for name, value in at_switch.items():
        expected = linear.model.state_dict()[name] if name.startswith("head.") else pretrained[name]
        assert torch.equal(value, expected), name
    final = load_file(str(run / "trainable.safetensors"))
    assert set(final) == set(at_switch)  # every weight is kept, as full fine-tuning keeps them
    assert not torch.equal(final["blocks.0.attn.qkv.weight"], pretrained["blocks.0.attn.qkv.weight"])


def test_lpft_stages_split_the_steps_and_scale_the_warm_up():
    spec = {"method": "lpft", "args": {}, "train": {"steps": 300, "lr": 0.05, "warmup_steps": 15}}
    probe, tune = stages.plan(spec)
    assert (probe.start, probe.steps, probe.lr, probe.warmup_steps, probe.head_only) == (0, 150, 0.05, 8, True)
    assert (tune.start, tune.steps, tune.lr, tune.warmup_steps, tune.head_only) == (150, 150, 0.05, 15, False)
    assert stages.learning_rate([probe, tune], 150) == pytest.approx(0.05 / 15)  # the second warm-up's first step


@pytest.mark.parametrize("method,args,message", [
    ("l2sp", {"alpha": -0.1}, "method 'l2sp': alpha must be a finite number >= 0, got -0.1"),
    ("l2sp", {"beta": float("inf")}, "method 'l2sp': beta must be a finite number >= 0, got inf"),
    ("l2sp", {"alpha": float("nan")}, "method 'l2sp': alpha must be a finite number >= 0, got nan"),
    ("l2sp", {"anchor": "previous"}, "method 'l2sp': anchor must be one of pretrained, start, got 'previous'"),
    ("lpft", {"probe_steps": 0}, "method 'lpft': probe_steps must be an integer >= 1, got 0"),
    ("lpft", {"probe_lr": -1}, "method 'lpft': probe_lr must be a positive number, got -1"),
])
def test_bad_arguments_are_refused(method, args, message):
    with pytest.raises(VitpeftError) as error:
        arguments.config_from_args(method, args)
    assert str(error.value) == message


@pytest.mark.parametrize("method", ["lpft", "l2sp"])
def test_params_counts_every_weight_of_vit_b_for_lpft_and_l2sp(method):
    """Both train every weight (LP-FT after its probe): as many as full fine-tuning's 85,875,556 (docs/protocol.md)."""
    spec = {"method": method, "args": {}, "model": {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}},
            "num_classes": 100}
    assert registry.count_trainable(spec) == 85_875_556


def test_the_pareto_front_keeps_the_points_no_other_beats_in_both():
    from vitpeft.report.plots import pareto_front

    assert pareto_front([40, 75, 90, 60], [60, 46, 30, 40]) == [(40, 60), (75, 46), (90, 30)]  # (60, 40) is beaten
    assert pareto_front([50, float("nan")], [50, 90]) == [(50, 50)]  # a point without a score is no point


@pytest.mark.parametrize("stop_at", [5, 8, 11])  # inside the probe, at its last step, inside the fine-tuning
def test_lpft_resumed_in_either_stage_gives_the_uninterrupted_weights(tmp_path, colours, stop_at):
    from test_resume import StopAtStep

    from vitpeft.training import resume
    from vitpeft.training.draws import load_data
    from vitpeft.training.train import Run

    spec = make_spec(colours, "lpft", {"probe_steps": 8}, steps=14, checkpoint_every=100)
    reference = train(spec, tmp_path / "reference", tmp_path / ".resume-reference", device="cpu")
    run = Run(spec, load_data(spec, torch.device("cpu")), torch.device("cpu"))
    with pytest.raises(resume.Preempted):
        run.loop(StopAtStep(run, stop_at), resume.folder_for(tmp_path / ".resume", spec))
    resumed = train(spec, tmp_path / "resumed", tmp_path / ".resume", device="cpu")
    ours, theirs = (load_file(str(folder / "trainable.safetensors")) for folder in (resumed, reference))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
