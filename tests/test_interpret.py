"""Attributions: known answers (a planted region, completeness), every method on every family,
and one-line errors for bad targets and methods."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_SETTINGS
from torch import nn

from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.interpret import METHODS, attribute, explain, faithfulness, parse_target, target_names
from genlab.interpret.attribution import explainable_copy
from genlab.models import MODELS, build, model_entry
from genlab.models.base import GenerativeModel

REGION = (slice(2, 6), slice(3, 7))  # rows 2-5, columns 3-6 of an 8x8 image: 16 of 64 pixels


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny(name: str, data, seed: int = 0, **extra) -> GenerativeModel:
    """An untrained small model of family ``name`` for ``data`` (seeded)."""
    fields = {f.name for f in dataclasses.fields(model_entry(name)[1])}
    settings = {k: v for k, v in TINY_SETTINGS.get(name, {}).items() if k in fields}
    torch.manual_seed(seed)
    return build(
        name, shape=data.shape, num_classes=data.num_classes, **{**settings, **extra}
    ).eval()


class PlantedModel(GenerativeModel):
    """A model whose target reads only the 4x4 ``REGION``: a small monotone network on it."""

    name = "planted"

    def __init__(self, config=None, *, shape=(1, 8, 8), num_classes=0):
        super().__init__(config, shape=shape, num_classes=num_classes)
        gen = torch.Generator().manual_seed(0)
        self.hidden = nn.Linear(16, 8)
        self.out = nn.Linear(8, 1)
        with torch.no_grad():  # positive weights: every region pixel raises the target
            self.hidden.weight.copy_(torch.rand(8, 16, generator=gen) + 0.5)
            self.out.weight.copy_(torch.rand(1, 8, generator=gen) + 0.5)

    def explain_target(self, x):
        region = x[:, :, REGION[0], REGION[1]].flatten(1)
        return self.out(nn.functional.softplus(self.hidden(region) - 4)).squeeze(1)


@pytest.fixture(scope="module")
def planted_images():
    gen = torch.Generator().manual_seed(1)
    return 0.05 + 0.95 * torch.rand(32, 1, 8, 8, generator=gen)


# ----------------------------------------------------------------------------- known answers
def test_a_planted_region_is_found(planted_images):
    model, x = PlantedModel(), planted_images
    attr = attribute(model, x, method="ig", n_steps=64)
    inside = torch.zeros_like(x, dtype=torch.bool)
    inside[:, :, REGION[0], REGION[1]] = True
    outside_share = attr[~inside].abs().sum() / attr.abs().sum()
    assert outside_share < 0.01
    assert (attr[inside] > 0).all()  # the monotone net: every region pixel helps
    assert faithfulness(model.explain_target, x, attr) >= 0.9


def test_random_attributions_score_as_random(planted_images, digits):
    model, x = PlantedModel(), planted_images
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert 0.4 <= faithfulness(model.explain_target, x, noise) <= 0.6
    vae = tiny("vae", digits)
    images = digits.test.x[:32]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    assert 0.4 <= faithfulness(vae.explain_target, images, noise) <= 0.6
    ig = attribute(vae, images)
    assert faithfulness(vae.explain_target, images, ig) > 0.8  # and IG does far better


def test_deleting_by_reversed_attributions_scores_below_chance(planted_images):
    model, x = PlantedModel(), planted_images
    attr = attribute(model, x, n_steps=64)
    assert faithfulness(model.explain_target, x, -attr) < 0.2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_integrated_gradients_is_complete_for_every_default_target(name, digits):
    model = tiny(name, digits)
    expl = explain(model, digits.test.x[:16], method="ig", n_steps=256)
    change = (expl.target_values - expl.baseline_values).abs()
    assert (change > 1e-4).all()
    assert (expl.delta.abs() < 0.01 * change).all(), (expl.delta.abs() / change).max()
    # completeness, checked directly: the attributions add up to f(x) - f(0)
    total = expl.attributions.flatten(1).sum(1)
    assert torch.allclose(total, expl.target_values - expl.baseline_values, rtol=0.01, atol=1e-4)


# ----------------------------------------------------------------------------- every method
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_method_gives_finite_maps_shaped_like_the_input(name, digits):
    model = tiny(name, digits)
    x = digits.test.x[:4]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in sorted(METHODS):
        attr = attribute(model, x, method=method)
        assert attr.shape == x.shape, method
        assert torch.isfinite(attr).all(), method
        assert attr.abs().sum() > 0, method
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training is False and all(p.grad is None for p in model.parameters())


def test_methods_are_repeatable_for_a_seed(digits):
    model, x = tiny("vae", digits), digits.test.x[:4]
    for method in ("gradshap", "smoothgrad"):
        a = attribute(model, x, method=method, seed=5)
        assert torch.equal(a, attribute(model, x, method=method, seed=5))
        assert not torch.equal(a, attribute(model, x, method=method, seed=6))


class ReusedLayerModel(GenerativeModel):
    """One ReLU module applied twice: DeepLift's rules need each layer used once."""

    name = "reused"

    def __init__(self, config=None, *, shape=(1, 8, 8), num_classes=0):
        super().__init__(config, shape=shape, num_classes=num_classes)
        self.first, self.act, self.last = nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1)

    def explain_target(self, x):
        return self.last(self.act(self.act(self.first(x.flatten(1))))).squeeze(1)


def test_deeplift_on_a_model_it_cannot_follow_is_one_clear_line(digits):
    with pytest.raises(ConfigError) as err:
        attribute(ReusedLayerModel(), digits.test.x[:2], method="deeplift")
    message = str(err.value)
    assert message.startswith("deeplift cannot explain the reused: Captum's DeepLift rules fail")
    assert message.endswith("; use ig instead") and "\n" not in message
    assert attribute(ReusedLayerModel(), digits.test.x[:2], method="ig").shape == (2, 1, 8, 8)


def test_deeplift_equals_ig_where_the_target_is_linear_in_the_pixels(digits):
    """The binary PixelCNN's target, with its predictions held fixed, is linear in x."""
    model, x = tiny("pixelcnn", digits), digits.test.x[:4]
    deeplift = attribute(model, x, method="deeplift")
    assert torch.allclose(deeplift, attribute(model, x, method="ig"), atol=1e-5)
    grey = attribute(tiny("pixelcnn", digits, inputs="grey"), x, method="deeplift")
    assert grey.shape == x.shape and torch.isfinite(grey).all()


def test_latent_space_targets_attribute_over_z(digits):
    x = digits.test.x[:4]
    for name in ("vae", "cvae"):
        model = tiny(name, digits)
        expl = explain(model, x, target="decoder:center")
        assert expl.space == "latent" and expl.region == (2, 6, 2, 6)
        assert expl.attributions.shape == (4, model.latent_dim)
        assert expl.images.shape == x.shape  # the decoded codes, for display
        enc = attribute(model, x, target="latent:1")
        assert enc.shape == x.shape and torch.isfinite(enc).all()
    gan = tiny("gan", digits)
    z = torch.randn(3, gan.latent_dim, generator=torch.Generator().manual_seed(0))
    for method in sorted(METHODS):
        attr = attribute(gan, z, method=method, target="generator:0:4,0:8")
        assert attr.shape == z.shape and torch.isfinite(attr).all(), method


def test_a_latent_target_depends_only_on_its_dim(digits):
    model = tiny("vae", digits)
    x = digits.test.x[:4]
    expl = explain(model, x, target="latent:2", n_steps=128)
    mu = model.encode(x)[:, 2] - model.encode(torch.zeros_like(x))[:, 2]
    assert torch.allclose(expl.attributions.flatten(1).sum(1), mu.detach(), rtol=0.01, atol=1e-4)


def test_mixture_components_and_the_pixelcnn_context(digits):
    mix = tiny("mixture", digits)
    resp = parse_target(mix, "component:2").values(digits.test.x[:4])
    assert torch.allclose(resp, mix.responsibilities(digits.test.x[:4])[:, 2])
    pcnn = tiny("pixelcnn", digits)
    x = digits.test.x[:4]
    # with the predictions held at those made from x itself, the target is exactly log p(x)
    assert torch.allclose(parse_target(pcnn, "default").values(x), -pcnn.loss(x))
    assert torch.allclose(parse_target(pcnn, "default").values(x), pcnn.explain_target(x))


def test_the_copy_is_plain_even_when_the_model_carries_hooks(digits):
    model = tiny("vae", digits)
    calls = []
    model.encoder.register_forward_hook(lambda *a: calls.append(1))
    copy = explainable_copy(model)
    attribute(model, digits.test.x[:2])
    assert calls == [] and copy is not model and not copy.training
    assert all(not p.requires_grad for p in copy.parameters())


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("vae", "latent:99", "latent:99 is out of range; this model has 4 latent dims (0–3)"),
        ("pixelcnn", "latent:3", "latent:3 needs a model with an encoder; the pixelcnn has none"),
        ("gan", "latent:0", "latent:0 needs a model with an encoder; the gan has none"),
        ("mixture", "decoder:center", "decoder:center needs a model with a latent space"),
        ("vae", "component:1", "component:1 needs a model with mixture components"),
        ("mixture", "component:6", "component:6 is out of range; this model has 6 components"),
        ("vae", "latent:x", "latent:x: the index must be a whole number, e.g. latent:3"),
        ("vae", "decoder:middle", "decoder:middle: unknown region 'middle'; use center, top"),
        ("vae", "decoder:0:9,0:4", "decoder:0:9,0:4: unknown region '0:9,0:4'; use center, top, "
                                   "bottom, left, right, all, or r0:r1,c0:c1 within 8×8"),
        ("gan", "elbo", "unknown target 'elbo' for the gan; valid targets: default, logit, "
                        "generator:REGION"),
    ],
)
def test_bad_targets_give_one_clear_line(name, spec, message, digits):
    model = tiny(name, digits)
    with pytest.raises(ConfigError) as err:
        attribute(model, digits.test.x[:2], target=spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_methods_options_and_inputs_are_refused(digits):
    model = tiny("vae", digits)
    x = digits.test.x[:2]
    known = "deeplift, gradshap, ig, occlusion, saliency, smoothgrad"
    with pytest.raises(ConfigError, match=f"^unknown attribution method 'lime'; known methods: "
                                          f"{known}$"):
        attribute(model, x, method="lime")
    with pytest.raises(ConfigError, match="^ig has no option 'steps'; it takes n_steps"):
        attribute(model, x, steps=3)
    with pytest.raises(ConfigError, match=r"explains images of shape \(B, 1, 8, 8\)"):
        attribute(model, torch.zeros(2, 1, 28, 28))
    with pytest.raises(ConfigError, match="the gan has no encoder, so generator:center explains "
                                          "latent codes"):
        attribute(tiny("gan", digits), x, target="generator:center")


def test_target_names_list_what_each_family_offers(digits):
    names = {n: target_names(tiny(n, digits)) for n in sorted(MODELS)}
    assert names["vae"][:3] == ["default", "elbo", "latent:K (K = 0–3)"]
    assert names["vae"][3].startswith("decoder:REGION")
    assert names["gan"][:2] == ["default", "logit"] and names["gan"][2].startswith("generator:")
    assert names["pixelcnn"] == ["default", "loglik"]
    assert names["mixture"] == ["default", "loglik", "component:K (K = 0–5)"]
