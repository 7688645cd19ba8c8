import pytest
import torch
import torch.nn.functional as F

from lrscan.pipeline.train.model import MLP, NonFiniteModel, SGDStep, param_shapes


def test_lecture_init_is_plain_randn_from_the_seeded_generator():
    m = MLP.create(27, 3, 2, 100, seed=2147483647)
    g = torch.Generator().manual_seed(2147483647)
    expected = [torch.randn(s, generator=g) for s in param_shapes(27, 3, 2, 100).values()]
    for got, want in zip(m.params().values(), expected):
        assert torch.equal(got, want)


def test_shapes_follow_the_seed():
    m = MLP.create(27, 3, 2, 100, seed=1)
    p = m.params()
    assert p["C"].shape == (27, 2) and p["W1"].shape == (6, 100) and p["b1"].shape == (100,)
    assert p["W2"].shape == (100, 27) and p["b2"].shape == (27,)
    assert m.n_params == 27 * 2 + 6 * 100 + 100 + 100 * 27 + 27
    X = torch.randint(0, 27, (32, 3))
    assert m.logits(X).shape == (32, 27)


def test_scaled_init_is_an_option():
    m = MLP.create(27, 3, 10, 200, seed=1, init="scaled")
    assert m.params()["b2"].abs().max() == 0
    assert m.params()["W2"].std() < 0.05


def test_hand_written_step_equals_the_seeds_autograd_step():
    torch.manual_seed(0)
    m = MLP.create(27, 3, 10, 200, seed=3)
    X, Y = torch.randint(0, 27, (32, 3)), torch.randint(0, 27, (32,))
    lr = 0.1
    # the seed's step with autograd, on copies of the parameters
    C, W1, b1, W2, b2 = (t.clone().requires_grad_() for t in m.params().values())
    emb = C[X]
    h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
    logits = h @ W2 + b2
    loss_ref = F.cross_entropy(logits, Y)
    loss_ref.backward()
    after = [(p - lr * p.grad).detach() for p in (C, W1, b1, W2, b2)]

    loss = SGDStep(m)(X.view(-1), Y, lr)
    torch.testing.assert_close(loss, loss_ref.detach())
    for got, want in zip(m.params().values(), after):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_loss_over_a_split_matches_cross_entropy():
    m = MLP.create(27, 3, 2, 16, seed=1)
    X, Y = torch.randint(0, 27, (1000, 3)), torch.randint(0, 27, (1000,))
    assert abs(m.loss(X, Y, batch=300) - F.cross_entropy(m.logits(X), Y).item()) < 1e-5


def test_sample_ends_at_the_marker():
    m = MLP.create(5, 3, 2, 8, seed=1)
    words = m.sample(3, torch.Generator().manual_seed(0), max_len=20)
    assert len(words) == 3 and all(0 not in w and len(w) <= 20 for w in words)


def test_sampling_a_diverged_model_says_so_instead_of_crashing():
    g = torch.Generator().manual_seed(0)
    model = MLP.create(27, 3, 2, 16, seed=1)
    model.flat.fill_(float("nan"))
    with pytest.raises(NonFiniteModel, match="weights are not finite"):
        model.sample(1, g)
    # finite weights whose logits overflow: softmax of inf is NaN, which torch.multinomial rejects
    model.flat.fill_(3e38)
    with pytest.raises(NonFiniteModel, match="probabilities are not finite"):
        model.sample(1, g)
