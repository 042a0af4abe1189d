"""Checkpoint manifests: every file's size and CRC-32, written last, verified before resuming.

    write_manifest(tmp_folder)          # after every rank's files are in it, before the rename
    problem = verify(folder)            # None, or why it cannot be used ("state/optimizer.bin: 120 of 4096 bytes")
    path, skipped = newest_valid(paths) # the latest checkpoint that verifies, and the ones passed over
    drop_from_manifest(folder, "state/")  # before those files are removed (an old checkpoint keeps only its model)

A checkpoint folder is written as checkpoint-N.tmp and renamed when complete, so a killed run
leaves only a .tmp folder; the manifest also catches what the rename cannot: a file truncated or
overwritten later (a full disk, a copy cut short, a bad sector). Checksumming reads every byte
once at save and once at resume (about 1 s per GB).
"""

from __future__ import annotations

import json
import os
import zlib

MANIFEST = "manifest.json"


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(folder: str) -> list[str]:
    out = []
    for root, _, names in os.walk(folder):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), folder)
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_manifest(folder: str) -> None:
    """Record every file of `folder` (size, crc32); the manifest itself is written atomically."""
    files = {
        rel: {"size": os.path.getsize(os.path.join(folder, rel)), "crc32": _crc32(os.path.join(folder, rel))}
        for rel in _files(folder)
    }
    _write(folder, files)


def _write(folder: str, files: dict) -> None:
    tmp = os.path.join(folder, MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"version": 1, "files": files}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(folder, MANIFEST))


def listed(folder: str) -> list[str]:
    """The files the manifest records (empty when there is no readable manifest)."""
    try:
        with open(os.path.join(folder, MANIFEST)) as fh:
            return list(json.load(fh)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def drop_from_manifest(folder: str, prefix: str) -> None:
    """Forget the files under `prefix` (atomically), before they are deleted."""
    with open(os.path.join(folder, MANIFEST)) as fh:
        files = json.load(fh)["files"]
    _write(folder, {rel: v for rel, v in files.items() if not rel.startswith(prefix)})


def verify(folder: str) -> str | None:
    """None if every file in the manifest is present with its size and checksum; else the first problem."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return f"no {MANIFEST} (the checkpoint was not completed)"
    try:
        with open(path) as fh:
            files = json.load(fh)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    for rel, want in files.items():
        p = os.path.join(folder, rel)
        if not os.path.isfile(p):
            return f"{rel} is missing"
        size = os.path.getsize(p)
        if size != want["size"]:
            return f"{rel} has {size} bytes, the manifest says {want['size']} (truncated or overwritten)"
        if _crc32(p) != want["crc32"]:
            return f"{rel} does not match its checksum (corrupt)"
    return None


def newest_valid(paths: list[str], check=verify) -> tuple[str | None, list[tuple[str, str]]]:
    """The last of `paths` (oldest first) that passes `check` (path -> problem or None; default: it verifies), and
    [(path, problem)] of newer ones that did not."""
    skipped = []
    for p in reversed(paths):
        problem = check(p)
        if problem is None:
            return p, skipped
        skipped.append((p, problem))
    return None, skipped
