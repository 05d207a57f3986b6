"""Naming a shard the way CI matrices, Slurm arrays and Kubernetes Indexed Jobs do."""
import hashlib

import pytest

from grader.errors import UsageError
from grader.shards import ShardSpec, owner, resolve


def test_one_based_zero_based_and_the_default():
    assert resolve(None) == ShardSpec(0, 1, "--shard 1/1")
    assert (resolve("2/4").index, resolve("2/4").count) == (1, 4)
    assert (resolve(None, 1, 4).index, resolve(None, 1, 4).count) == (1, 4)
    assert resolve("2/4").label == resolve(None, 1, 4).label == "2/4"
    for bad in (("0/4",), ("5/4",), ("x",), ("2/4", 1, None), (None, 4, 4), (None, 0, None), (None, -1, 3),
                ("2/4", None, 4), (None, None, 3)):
        with pytest.raises(UsageError):
            resolve(*bad)


def test_slurm_arrays_from_one_or_zero_and_with_a_step():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert (resolve("env", environ=env).index, resolve("env", environ=env).count) == (2, 4)   # --array=1-4
    env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve("env", environ=env).index == 0                                             # --array=0-3
    env = {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "4",
           "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve("env", environ=env).index == 2                                             # --array=0-15:4
    assert "SLURM_ARRAY_TASK_ID=8" in resolve("env", environ=env).source
    with pytest.raises(UsageError, match="not on the array's steps"):
        resolve("env", environ=dict(env, SLURM_ARRAY_TASK_ID="6"))
    with pytest.raises(UsageError, match="SLURM_ARRAY_TASK_COUNT is not set"):
        resolve("env", environ={"SLURM_ARRAY_TASK_ID": "1"})


def test_kubernetes_indexed_jobs_need_the_count():
    assert resolve("env", count=5, environ={"JOB_COMPLETION_INDEX": "4"}).label == "5/5"
    with pytest.raises(UsageError, match="--shard-count"):
        resolve("env", environ={"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(UsageError, match="between 0 and 4"):
        resolve("env", count=5, environ={"JOB_COMPLETION_INDEX": "5"})
    with pytest.raises(UsageError, match="neither"):
        resolve("env", count=5, environ={})
    with pytest.raises(UsageError, match="both"):
        resolve("env", environ={"JOB_COMPLETION_INDEX": "0", "SLURM_ARRAY_TASK_ID": "0"})


def test_the_owner_is_a_hash_of_the_id_so_shards_do_not_move():
    ids = [f"student{i}" for i in range(200)]
    for count in (1, 3, 4):
        owners = [owner(i, count) for i in ids]
        assert owners == [int(hashlib.sha256(i.encode()).hexdigest(), 16) % count for i in ids]
        assert set(owners) == set(range(count))
        assert all(ShardSpec(o, count, "").owns(i) for i, o in zip(ids, owners))
