"""kill -9 at the moments that matter (mid-step, while a state is renamed into place, while
run.json is written): the resumed run ends with the weights of an uninterrupted one, and the
folder holds no half-written file and a run.json that lists exactly what is there."""

import pytest
from faultkit import damage, finish, run, same_weights, write_config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    result = run(write_config(root))
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "out" / "f.safetensors"


@pytest.mark.parametrize("fault", ["step@5", "rename:f-step*-state@2", "rename:run.json@4"])
def test_a_killed_run_resumes_to_the_same_weights_and_leaves_nothing_broken(fault, uninterrupted, tmp_path):
    config = write_config(tmp_path)
    killed = run(config, fault=fault)
    assert killed.returncode == -9, killed.stderr[-2000:]  # the fault point really killed it
    result = finish(config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert same_weights(tmp_path / "out" / "f.safetensors", uninterrupted)
    assert damage(tmp_path / "out") == {"leftovers": [], "unreadable": [], "listed_wrong": []}
