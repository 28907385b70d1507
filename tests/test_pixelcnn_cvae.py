"""The PixelCNN's causality and sampler, and the CVAE's use of labels."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.config import TrainConfig
from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.models import build, model_config
from genlab.train import Trainer, seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _pixelcnn(shape=(1, 8, 8), seed=0, **overrides):
    seed_everything(seed)
    return build("pixelcnn", shape=shape, num_classes=10, **overrides).eval()


def _cvae(data, seed=0, **overrides):
    seed_everything(seed)
    return build("cvae", shape=data.shape, num_classes=data.num_classes, **overrides).eval()


# ---------------------------------------------------------------------------- PixelCNN
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 9)])
@pytest.mark.parametrize("pixel", [(0, 0), (0, 5), (3, 0), (3, 4), (5, 5)])
def test_pixelcnn_logits_see_only_earlier_pixels(shape, pixel):
    model = _pixelcnn(shape)
    c, h, w = shape
    i, j = pixel
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.logits(x)[:, :, i, j]
        later = x.clone().view(3, c, h * w)
        later[:, :, i * w + j :] = torch.rand(3, c, h * w - i * w - j)  # (i, j) and after it
        assert torch.equal(model.logits(later.view(3, *shape))[:, :, i, j], before)
        # every earlier neighbour matters: left, above, and above-right (no blind spot)
        for di, dj in [(0, -1), (-1, 0), (-1, 1), (-2, -2)]:
            if 0 <= i + di < h and 0 <= j + dj < w:
                earlier = x.clone()
                earlier[:, :, i + di, j + dj] = 1 - earlier[:, :, i + di, j + dj]
                changed = (model.logits(earlier)[:, :, i, j] - before).abs().max()
                assert changed > 1e-6, f"pixel {pixel} ignores pixel ({i + di}, {j + dj})"


def test_pixelcnn_first_pixel_has_no_input():
    model = _pixelcnn()
    with torch.no_grad():
        logits = model.logits(torch.rand(4, 1, 8, 8))
    assert torch.allclose(logits[:, :, 0, 0], logits[0, 0, 0, 0].expand(4, 1))


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 5, 7)])
def test_pixelcnn_sampler_draws_from_the_trained_network(shape):
    """The fast row/pixel sampler must give the same probabilities as logits() on the result."""
    model = _pixelcnn(shape, layers=3, kernel_size=5)
    x = model.sample(16, generator=torch.Generator().manual_seed(5))
    noise = torch.rand((16, *shape), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        p = torch.sigmoid(model.logits(x))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(x, (noise < p).float())


def test_pixelcnn_sampling_reports_progress_and_is_seeded():
    model = _pixelcnn()
    calls = []
    a = model.sample(
        5, generator=torch.Generator().manual_seed(1), progress=lambda *dt: calls.append(dt)
    )
    b = model.sample(5, generator=torch.Generator().manual_seed(1))
    c = model.sample(5, generator=torch.Generator().manual_seed(2))
    assert calls == [(8 * (r + 1), 64) for r in range(8)]  # once per row, ending at 64/64
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pixelcnn_sampling_restores_the_thread_count():
    before = torch.get_num_threads()
    _pixelcnn().sample(2)
    assert torch.get_num_threads() == before


def test_pixelcnn_likelihood_is_exact(digits):
    model = _pixelcnn()
    x = digits.test.x[:6]
    loss = model.loss(x)
    assert torch.allclose(model.nll(x, k=1), loss.detach())
    assert torch.equal(model.nll(x, k=1), model.nll(x, k=50))  # exact: k is not used
    assert torch.allclose(model.explain_target(x), -loss)
    assert torch.allclose(model.score(x), -loss)
    # a per-pixel Bernoulli: about log 2 nats per pixel for an untrained net
    assert 0.3 * 64 * math.log(2) < float(loss.detach().mean()) < 3 * 64 * math.log(2)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("kernel_size", 4, "odd number"),
        ("first_kernel_size", 1, "odd number"),
        ("layers", 0, "layers must be at least 1"),
        ("channels", 0, "at least 1"),
    ],
)
def test_pixelcnn_config_messages(key, value, message):
    with pytest.raises(ConfigError, match=message):
        model_config("pixelcnn", {key: value})


# ---------------------------------------------------------------------------- CVAE
def test_cvae_samples_the_labels_it_is_given(digits):
    model = _cvae(digits)
    labels = torch.tensor([3, 3, 7, 0, 9, 1])
    x, y = model.sample_with_labels(6, generator=torch.Generator().manual_seed(0), labels=labels)
    assert x.shape == (6, *digits.shape) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(y.cpu(), labels)
    x2, _ = model.sample_with_labels(6, generator=torch.Generator().manual_seed(0), labels=labels)
    assert torch.equal(x, x2)
    _, drawn = model.sample_with_labels(500, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (500,) and set(drawn.tolist()) == set(range(10))  # uniform labels


def test_cvae_label_errors_are_clear(digits):
    model = _cvae(digits)
    x = digits.train.x[:4]
    with pytest.raises(ConfigError, match=r"class-conditional: loss\(x, y\) needs the labels"):
        model.loss(x)
    with pytest.raises(ConfigError, match=r"labels must lie in 0\.\.9"):
        model.loss(x, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ConfigError, match="got 2 labels for 3 samples"):
        model.sample_with_labels(3, labels=torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="latent_dim must be at least 1"):
        model_config("cvae", {"latent_dim": 0})


def test_cvae_decoder_uses_the_label(digits):
    model = _cvae(digits)
    z = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(0))
    zeros = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(model.decode(z), model.decode(z, zeros))  # no label: class 0
        assert not torch.allclose(model.decode(z, zeros), model.decode(z, zeros + 5))


def test_cvae_decodes_a_code_without_label_as_the_class_of_the_nearest_prior_mean(digits):
    model = _cvae(digits)
    with torch.no_grad():
        model.prior_means.weight.copy_(4 * torch.eye(model.latent_dim, 10))  # m_c = 4 e_c
        z = 4 * torch.eye(10, model.latent_dim)[[7, 2, 2, 9]]
        z = z + 0.3 * torch.randn(4, model.latent_dim)
        assert model.classes_of_codes(z).tolist() == [7, 2, 2, 9]
        assert torch.equal(model.decode(z), model.decode(z, torch.tensor([7, 2, 2, 9])))
        # samples of class c are drawn around m_c: the encoder is not needed to see that
        codes = model.prior_sample(200) + model.prior_mean(torch.full((200,), 5), z)
        assert (model.classes_of_codes(codes) == 5).float().mean() > 0.9
    standard = _cvae(digits, prior="standard")
    assert float(standard.prior_mean(torch.arange(10), z).abs().sum()) == 0


def test_cvae_without_labels_uses_its_own_guess(digits):
    model = _cvae(digits)
    x = digits.test.x[:8]
    guess = model.infer_labels(x)
    assert guess.shape == (8,) and guess.dtype == torch.long
    with torch.no_grad():
        assert torch.allclose(model.encode(x), model.encode(x, guess))
        assert torch.allclose(model.reconstruct(x), model.decode(model.encode(x, guess), guess))
        g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
        given_guess = model.nll(x, k=4, generator=g(), y=guess)
        assert torch.allclose(model.nll(x, k=4, generator=g()), math.log(10) + given_guess)
    # the mixture over classes is at least as likely as any one class, divided by K
    mixed = model.explain_target(x)
    per_class = torch.stack([model.explain_target(x, torch.full((8,), c)) for c in range(10)])
    assert torch.all(mixed >= per_class.max(0).values - math.log(10) - 1e-4)
    assert torch.all(mixed <= per_class.max(0).values + 1e-4)


def test_cvae_importance_bound_tightens_with_k(digits):
    model = _cvae(digits)
    x, y = digits.test.x[:32], digits.test.y[:32]
    one = model.nll(x, k=1, generator=torch.Generator().manual_seed(0), y=y)
    many = model.nll(x, k=64, generator=torch.Generator().manual_seed(0), y=y)
    assert one.shape == many.shape == (32,)
    assert float(many.mean()) < float(one.mean())


def test_cvae_trained_briefly_draws_the_asked_class(digits):
    """After a short training, the model's own classifier recognises the asked class."""
    model = _cvae(digits)
    cfg = TrainConfig(epochs=8, batch_size=64, lr=2e-3, device="cpu")
    Trainer(model, cfg).fit(digits)
    labels = torch.arange(200) % 10
    x, _ = model.sample_with_labels(200, generator=torch.Generator().manual_seed(0), labels=labels)
    assert float((model.infer_labels(x) == labels).float().mean()) > 0.9
    real = float((model.infer_labels(digits.test.x) == digits.test.y).float().mean())
    assert real > 0.7  # the CVAE is also a (Bayes-rule) classifier of real digits
