"""Reading task data: a dataset hub id through `datasets.load_dataset`, or local JSON-lines files.

Local files are read strictly: a missing file, an empty file, a line that is not a JSON object or lacks a field
stops the run with a message naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

from vbon_exp.errors import DataError


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path}, line {number}: missing field(s) {missing} (has {sorted(row)})")
            for key in required:
                if key in ("text", "prompt") and (not isinstance(row[key], str) or not row[key].strip()):
                    raise DataError(f"{path}, line {number}: field {key!r} is empty or not a string")
            rows.append(row)
    if not rows:
        raise DataError(f"data file {path} is empty (expected one JSON object per line with {list(required)})")
    return rows


def local_split_files(data_dir: str | Path) -> dict[str, Path]:
    """{split: file} for `<data_dir>/<split>.jsonl` (train, test) and any other `*.jsonl` as a fallback."""
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"task.data_dir {directory} does not exist or is not a directory")
    files = {p.stem: p for p in sorted(directory.glob("*.jsonl"))}
    if not files:
        raise DataError(f"task.data_dir {directory} holds no *.jsonl file")
    return files


def load_hub_split(dataset: str, split: str, field: str) -> list[str]:
    """Texts of one split of a hub dataset (cached by `datasets`); a clear error where the hub is out of reach."""
    try:
        import datasets

        ds = datasets.load_dataset(dataset, split=split)
    except Exception as err:  # connection, missing dataset, missing split: one message
        raise DataError(
            f"could not load dataset {dataset!r} (split {split!r}): {type(err).__name__}: {err}. Offline, point "
            "task.data_dir at a directory of JSON-lines files instead (see README)"
        ) from err
    if field not in ds.column_names:
        raise DataError(f"dataset {dataset!r} has no column {field!r} (columns: {ds.column_names})")
    return list(ds[field])
