from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet.launch_request import LaunchRequest


def test_envs_take_plain_names():
    request = LaunchRequest(model_name="m", envs={"OMP_NUM_THREADS": "2", "_X1": ""})
    assert request.envs == {"OMP_NUM_THREADS": "2", "_X1": ""}


@pytest.mark.parametrize("name", ["", "1ABC", "A=B", "A B", "PATH\n", "X" * 129])
def test_an_env_name_that_is_no_name_is_refused(name):
    with pytest.raises(ValidationError, match="not an environment variable name"):
        LaunchRequest(model_name="m", envs={name: "1"})


@pytest.mark.parametrize("name", ["XOSCAR_AUTH_KEY", "FLEET_CLUSTER_SECRET"])
def test_fleets_own_secrets_cannot_be_replaced(name):
    with pytest.raises(ValidationError, match=f"{name} is set by Fleet"):
        LaunchRequest(model_name="m", envs={name: "guess"})
