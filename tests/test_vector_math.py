"""ATen's CPU exp, log, sqrt, erfinv and tanh routed around MKL's vector math (vitpeft.training.vector_math)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import special
from torch.utils._python_dispatch import TorchDispatchMode

from vitpeft.evaluation import knn
from vitpeft.data import augment
from vitpeft.methods import registry
from vitpeft.models.backbone import build_model
from vitpeft.training import kernels, vector_math

TINY = {"name": "vit_base_patch16_224", "img_size": 32,
        "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}  # fmt: skip
REFERENCE = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "erfinv": special.erfinv, "tanh": np.tanh}
# within a few ulps of the float64 truth: exp is pow(e, x), whose rounded e costs |x| ulps
ARGS = {"topk": {"k": 1}, "peft": {"peft_type": "IA3", "target_modules": ["q", "v", "fc2"], "feedforward_modules": ["fc2"]}}
TOLERANCE = {torch.float64: 4e-15, torch.float32: 1.2e-7}


@pytest.fixture(scope="module", autouse=True)
def replaced():
    vector_math.replace()


def inputs(name: str, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "erfinv":
        return (torch.rand(20_000, generator=g, dtype=torch.float64) * 1.998 - 0.999).to(dtype)
    if name in ("log", "sqrt"):
        return (torch.rand(20_000, generator=g, dtype=torch.float64) * 1e3 + 1e-6).to(dtype)
    return (torch.randn(20_000, generator=g, dtype=torch.float64) * 6).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", vector_math.REPLACED)
def test_each_function_stays_within_a_few_ulps_of_the_truth(name, dtype):
    x = inputs(name, dtype)
    found = getattr(torch, name)(x)
    assert found.dtype == dtype
    truth = REFERENCE[name](x.double().numpy())
    error = np.abs(found.double().numpy() - truth)
    # erfinv is -ndtri((1 - |x|) / 2) / sqrt(2): that sum's rounding costs 1e-16 absolute, which is many ulps near 0
    absolute = 2e-16 if name == "erfinv" else 0.0
    worst = (error - absolute).max(initial=0.0, where=error > absolute) if absolute else 0.0
    assert np.all(error <= TOLERANCE[dtype] * np.abs(truth) + absolute), (name, dtype, worst, error.max())


@pytest.mark.parametrize("name, x, expected", [
    ("exp", [-math.inf, 0.0, math.inf, math.nan, 800.0], [0.0, 1.0, math.inf, math.nan, math.inf]),
    ("log", [0.0, 1.0, math.inf, -1.0, math.nan], [-math.inf, 0.0, math.inf, math.nan, math.nan]),
    ("sqrt", [0.0, -0.0, math.inf, -1.0, 4.0], [0.0, -0.0, math.inf, math.nan, 2.0]),
    ("erfinv", [-1.0, 0.0, 1.0, 2.0], [-math.inf, 0.0, math.inf, math.nan]),
    ("tanh", [-math.inf, -0.0, 0.0, 50.0, math.nan], [-1.0, -0.0, 0.0, 1.0, math.nan]),
])  # fmt: skip
def test_edge_values_are_the_functions_own(name, x, expected):
    found = getattr(torch, name)(torch.tensor(x, dtype=torch.float64))
    np.testing.assert_array_equal(found.numpy(), np.array(expected))
    numbers = ~np.isnan(np.array(expected))  # a NaN's sign means nothing
    assert list(np.signbit(found.numpy())[numbers]) == list(np.signbit(np.array(expected))[numbers])


@pytest.mark.parametrize("name", vector_math.REPLACED)
def test_functional_in_place_and_out_forms_all_take_the_replacement(name):
    x = inputs(name, torch.float32)
    expected = vector_math.COMPUTE[name](x).to(torch.float32)  # the composition itself: bit for bit
    assert torch.equal(getattr(torch, name)(x), expected)
    assert torch.equal(getattr(x.clone(), f"{name}_")(), expected)
    out = torch.empty(0)
    getattr(torch, name)(x, out=out)
    assert torch.equal(out, expected)
    assert getattr(torch, name)(torch.tensor([4])).dtype == torch.get_default_dtype()  # integers promote as ATen's


def test_gradients_flow_through_the_replacements():
    x = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)
    (x.exp() + x.log() + x.sqrt() + x.erfinv() + x.tanh()).sum().backward()
    d = x.detach()
    expected = d.exp() + 1 / d + 0.5 / d.sqrt() + math.sqrt(math.pi) / 2 * (d.erfinv() ** 2).exp() + 1 - d.tanh() ** 2
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=0)


class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name.split("::")[-1].rstrip("_"))
        return func(*args, **(kwargs or {}))


def test_no_job_of_the_study_calls_a_vector_math_function_left_to_mkl():
    """Initialisation, augmentation, every method's forward, backward and SGD step, AdamW and the k-NN: none reaches
    a VM-backed function this module does not replace (a new method that does makes this fail, naming it)."""
    g = torch.Generator().manual_seed(0)
    with Ops() as seen:
        for method in registry.REGISTRY:
            torch.manual_seed(0)
            model = registry.apply(build_model(TINY, 10), method, ARGS.get(method, {}))
            optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
            images = torch.randint(0, 256, (4, 32, 32, 3), generator=g, dtype=torch.uint8)
            x = augment.normalize(augment.random_resized_crop_flip(images, 32, generator=g), (0.5,) * 3, (0.5,) * 3)
            torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
            optimiser.step()
        adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
        adamw.step()
        bank, queries = torch.randn(50, 8, generator=g), torch.randn(5, 8, generator=g)
        knn.knn_predict(bank, torch.arange(50) % 10, queries, ks=[5], temperature=0.07, device="cpu")
    assert not seen.names & set(vector_math.LEFT_TO_MKL), seen.names & set(vector_math.LEFT_TO_MKL)
    assert {"sqrt", "erfinv", "exp"} <= seen.names  # AdamW, the initialisation, the crops and the k-NN's weights


def test_a_pinned_command_replaces_them_and_records_it(tmp_path):
    code = ("from vitpeft.training import kernels; kernels.pin_environment(); import torch; "
            "kernels.use(torch.device('cpu')); r = kernels.record(torch.device('cpu')); "
            "print(r['vector_math'], r['reference_bits'])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == [*kernels.VM_BYPASSED.split(), "True"], done.stderr
