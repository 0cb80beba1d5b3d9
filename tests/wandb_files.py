"""Reading a wandb offline run back in tests: its run file `run-<id>.wandb` is a LevelDB-style log
(32 KiB blocks of chunks: crc32, length, type) of wandb's protobuf Records, after a 7-byte header
(":W&B", magic, version). wandb 0.31 has no Python reader of it any more (its service is Go; the
old wandb.sdk.internal.datastore is gone), so the few lines here read it, with wandb's own
protobuf classes.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import struct
import time

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024  # the log's block size; a record's chunk header: crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path):
    """The protobuf Records of an offline run file, in order."""
    data = pathlib.Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a wandb run file"
    pos, pending = 7, b""  # the file header: ":W&B", magic (2), version (1)
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        if pos + 7 + length > len(data):  # a chunk still being written
            return
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def finished_records(path, timeout=30.0):
    """The records of a finished offline run. wandb's service writes the file on its own schedule:
    `run.finish()` can return before the file holds the records, so wait for the exit record."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(path)) if os.path.getsize(path) >= 7 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def offline_run(directory):
    """(its directory, the run record, {history key: value}) of the one offline run under
    `directory`/wandb; a nested history key reads "cells/path"."""
    [run_dir] = glob.glob(os.path.join(directory, "wandb", "offline-run-*"))
    [path] = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    run, history = None, {}
    records = finished_records(path)
    assert any(r.WhichOneof("record_type") == "exit" for r in records), f"{path} has no exit record"
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert run is not None, f"no run record in {path}"
    return run_dir, run, history


def logged_table(run_dir, history, key):
    """A wandb.Table logged under `key`, one {column: value} per row, from the file the run wrote."""
    assert history[f"{key}/_type"] == "table-file"
    table = json.loads((pathlib.Path(run_dir) / "files" / history[f"{key}/path"]).read_text())
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


# Environment that would point wandb at a real account, run or settings.
WANDB_ACCOUNT_VARS = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC", "WANDB_RUN_ID",
                      "WANDB_RESUME")


def isolate(monkeypatch, tmp_path, unset=()) -> pathlib.Path:
    """No key, no netrc, no settings from the real home; wandb's own files under tmp_path. Returns
    the fake home."""
    for var in (*WANDB_ACCOUNT_VARS, *unset):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    return home
