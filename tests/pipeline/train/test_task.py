"""Tasks: loaded from a file or a module, a bad one refused in one line before a run exists, the dry run traceless."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.task import Task, check_task, load_task, lr_scales, make_task, task_module_name
from tests.conftest import REPO

TASKS = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from lrscan.pipeline.train.task import Task

    X, Y = torch.randn(64, 4), torch.randn(64, 1)


    def task(model, optimizer=None, batches=None, loss_fn=None):
        optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
        return Task(model, optimizer, batches if batches is not None else (lambda i: (X[:8], Y[:8])),
                    loss_fn or (lambda m, b: F.mse_loss(m(b[0]), b[1])))


    def make(seed, width=8):
        return task(nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 1)))


    def returns_a_model(seed):
        return nn.Linear(4, 1)


    def no_parameters(seed):
        return task(nn.ReLU(), optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))


    def foreign_optimizer(seed):
        return task(nn.Linear(4, 1), optimizer=torch.optim.SGD(nn.Linear(4, 1).parameters(), lr=0.1))


    def empty_batches(seed):
        return task(nn.Linear(4, 1), batches=[])


    def vector_loss(seed):
        return task(nn.Linear(4, 1), loss_fn=lambda m, b: (m(b[0]) - b[1]) ** 2)


    def detached_loss(seed):
        return task(nn.Linear(4, 1), loss_fn=lambda m, b: F.mse_loss(m(b[0]), b[1]).detach())
''')


@pytest.fixture
def tasks_file(tmp_path):
    path = tmp_path / "tasks.py"
    path.write_text(TASKS)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("spec, task_args, fragment", [
    ("missing.py:make", "{}", "task file 'missing.py' does not exist"),
    ("tasks.py:nope", "{}", "tasks.py has no function 'nope' (its functions: detached_loss, empty_batches"),
    ("no_such_package.mod:make", "{}", "no module named 'no_such_package.mod'"),
    ("tasks.py:make", "{'widht': 3}", "does not fit make(seed, width=8): got an unexpected keyword argument 'widht'"),
    ("tasks.py:returns_a_model", "{}", "returned Linear Linear(in_features=4, out_features=1, bias=True), not a "
                                       "pipeline.Task"),
    ("tasks.py:no_parameters", "{}", "Task.model (ReLU) has no parameters to train"),
    ("tasks.py:foreign_optimizer", "{}", "Task.optimizer is not over the model's parameters (2 of its 2"),
    ("tasks.py:empty_batches", "{}", "Task.batches is empty: iterating it yields no batch"),
    ("tasks.py:vector_loss", "{}", "returned a tensor of shape (8, 1), not a scalar"),
    ("tasks.py:detached_loss", "{}", "a loss that does not depend on the model's parameters"),
])
def test_a_bad_task_is_one_line_exit_2_and_no_run(tmp_path, tasks_file, spec, task_args, fragment):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", f"--task={spec}", f"--task_args={task_args}",
                        "--steps=5"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and fragment in p.stderr, p.stderr
    assert p.stderr.startswith(f"lrscan train: error: task={spec!r}")
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "checkpoints").exists()


def test_a_task_loads_from_a_file_or_a_module_with_its_arguments(tasks_file, words_file):
    task = load_task(f"{tasks_file}:make", 3, {"width": 5})
    assert task.model[0].out_features == 5
    task = load_task("pipeline.train.mlp_task:make", 3, {"data": str(words_file), "n_hidden": 7})
    assert task.model.W1.shape[1] == 7
    with pytest.raises(LrscanError, match="expected path/to/file.py:FUNCTION or package.module:FUNCTION"):
        load_task("tasks.py", 3, {})


def test_load_task_seeds_python_numpy_and_torch_before_make(tmp_path):
    (tmp_path / "unseeded.py").write_text(textwrap.dedent('''
        import random
        import numpy as np
        import torch
        from lrscan.pipeline.train.task import Task

        def make(seed):
            model = torch.nn.Linear(2, 1)  # torch's default init, from the global generator
            model.drawn = (random.random(), float(np.random.rand()))
            return Task(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda i: torch.ones(3, 2),
                        lambda m, b: m(b).mean())
    '''))
    a, b, c = (load_task(f"{tmp_path}/unseeded.py:make", seed, {}) for seed in (1, 1, 2))
    assert torch.equal(a.model.weight, b.model.weight) and a.model.drawn == b.model.drawn
    assert not torch.equal(a.model.weight, c.model.weight)


def _bn_task(batches) -> Task:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 1))
    return Task(model, torch.optim.Adam(model.parameters()), batches, lambda m, b: m(b).pow(2).mean())


def test_the_dry_run_leaves_no_trace():
    # random states, BatchNorm statistics, and the first batch of a one-shot iterator are as they were
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    task = _bn_task(lambda i: torch.randn(8, 3))  # batch(i) draws from the global generator
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    stats = [b.clone() for b in task.model.buffers()]
    assert check_task(task) is task
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    assert all(torch.equal(a, b) for a, b in zip(stats, task.model.buffers()))

    batches = [torch.full((4, 3), float(k)) for k in range(3)]
    one_shot = check_task(_bn_task(iter(batches)))
    assert [b[0, 0].item() for b in one_shot.batches] == [0.0, 1.0, 2.0]
    listed = check_task(_bn_task(batches))
    assert listed.batches is batches


@pytest.mark.parametrize("change, fragment", [
    (dict(accumulation_steps=0), "accumulation_steps=0: must be an int >= 1"),
    (dict(evaluate=3), "Task.evaluate is int 3"),
    (dict(scaler="yes"), "Task.scaler is str 'yes'"),
    (dict(batches=42), "Task.batches is int 42, not an iterable or a function batch(step)"),
    (dict(batches=lambda i: None), "Task.batches(0) returned None"),
    (dict(loss_fn=lambda m, b: 1.5), "returned float 1.5, not a scalar tensor"),
])
def test_check_task_names_the_field(change, fragment):
    model = nn.Linear(2, 1)
    task = Task(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda i: torch.ones(3, 2),
                lambda m, b: F.mse_loss(m(b), torch.zeros(3, 1)))
    for k, v in change.items():
        setattr(task, k, v)
    with pytest.raises(LrscanError) as e:
        check_task(task, where="range_test(task)")
    assert str(e.value).startswith("range_test(task): ") and fragment in str(e.value)


def test_the_cli_help_documents_task_and_task_args():
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", "--help"], capture_output=True, text=True,
                       cwd=REPO,
                       timeout=60)
    assert p.returncode == 0
    assert "--task=" in p.stdout and "path/to/file.py:make or package.module:make" in p.stdout
    assert "--task_args={}" in p.stdout and "{'width': 64}" in p.stdout


# -- the lr of every param group: the ratios the task was built with --------------------------------------------


def three_groups(lrs=(1e-3, 0.0, 1e-2)) -> torch.optim.Optimizer:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    return torch.optim.AdamW([{"params": m.parameters(), "lr": lr} for m, lr in zip(model, lrs)])


def test_lr_scales_keep_the_built_ratios_and_a_frozen_group_at_zero():
    assert lr_scales(three_groups()) == pytest.approx([1.0, 0.0, 10.0])
    # a warm-up built in make moved every lr to 0: initial_lr keeps the ratios
    opt = three_groups()
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: step / 100)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.0]
    assert lr_scales(opt) == pytest.approx([1.0, 0.0, 10.0])
    # group 0 frozen: the scheduled lr is the first group built non-zero
    assert lr_scales(three_groups((0.0, 1e-3, 1e-2))) == pytest.approx([0.0, 1.0, 10.0])
    # nothing built non-zero (an optimizer made with lr=0 for the trainer to set): every group gets the lr
    assert lr_scales(three_groups((0.0, 0.0, 0.0))) == [1.0, 1.0, 1.0]
    # a tensor lr reads too
    model = nn.Linear(2, 1)
    assert lr_scales(torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01))) == [1.0]


# -- every route builds the task the same way -------------------------------------------------------------------


def test_make_task_is_the_one_way_a_function_is_built(tmp_path):
    """A function and a file spec of the same make build the same task for a seed, whatever the global state."""
    (tmp_path / "unseeded_make.py").write_text(textwrap.dedent('''
        import random
        import numpy as np
        import torch
        from lrscan.pipeline.train.task import Task

        def make(seed, width=2):
            model = torch.nn.Linear(width, 1)
            model.drawn = (random.random(), float(np.random.rand()))
            return Task(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda i: torch.ones(3, width),
                        lambda m, b: m(b).mean())
    '''))
    spec = f"{tmp_path}/unseeded_make.py:make"
    from_file = load_task(spec, 5, {})
    torch.manual_seed(123), random.seed(9)  # another state before the next route
    from lrscan.pipeline.train.task import load_make

    from_function = make_task(load_make(spec), 5, {}, where="range_test")
    assert torch.equal(from_file.model.weight, from_function.model.weight)
    assert from_file.model.drawn == from_function.model.drawn
    with pytest.raises(LrscanError, match=r"^range_test: make\(seed, \*\*task_args\) with task_args=\{'depth': 2\} "
                                          r"does not fit make\(seed, width=2\)"):
        make_task(load_make(spec), 5, {"depth": 2}, where="range_test")


# -- task files under a name another process can import ---------------------------------------------------------

SPAWNED = textwrap.dedent('''
    """A task whose batches come from a Dataset defined here, through a DataLoader whose worker is spawned."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from lrscan.pipeline.train.task import Task


    class Squares(Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return torch.tensor([float(i)]), torch.tensor([float(i) ** 2])


    def make(seed):
        model = torch.nn.Linear(1, 1)
        loader = DataLoader(Squares(), batch_size=8, num_workers=1, multiprocessing_context="spawn")
        return Task(model, torch.optim.SGD(model.parameters(), lr=1e-4), loader,
                    lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]))
''')


@pytest.mark.slow
def test_a_task_files_dataset_unpickles_in_a_spawned_dataloader_worker(tmp_path):
    (tmp_path / "squares_task.py").write_text(SPAWNED)
    task = load_task(f"{tmp_path}/squares_task.py:make", 1)  # the dry run iterates it: a spawned worker
    assert type(task.batches.dataset).__module__ == "squares_task" == task_module_name(tmp_path / "squares_task.py")
    X, Y = next(iter(task.batches))  # and again, through a fresh worker
    assert X.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert torch.equal(Y, X**2)
    # loaded again: the same module, not a second copy of its classes
    assert type(load_task(f"{tmp_path}/squares_task.py:make", 2).batches.dataset) is type(task.batches.dataset)


def test_a_task_file_named_like_another_module_gets_a_stable_name_of_its_own(tmp_path):
    (tmp_path / "random.py").write_text("x = 1\n")  # `random` is taken: the stdlib's, already imported
    name = task_module_name(tmp_path / "random.py")
    assert name.startswith("lrscan_task_random_") and name == task_module_name(tmp_path / "random.py")
    code = "from lrscan.pipeline.train.task import task_module_name; print(task_module_name(__import__('pathlib').Path("
    code += f"{str(tmp_path / 'random.py')!r})))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert other.stdout.strip() == name  # the same in another process (no per-process hash())
