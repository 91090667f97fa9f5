"""``detops dataset upload CONFIG`` (issue 32, item 2): the run config's dataset goes to the stack's datasets
location with the layout kept, the printed ``data.sha256`` is the pin ``prepare`` checks on the uploaded copy
(read back through :func:`training.pipeline.staged_data` and :func:`training.pipeline.check_dataset_pin`, the
calls ``prepare`` makes), and a second upload copies nothing. Destinations: a local folder, Azurite (``az://``,
adlfs) and moto S3 (``s3://``, s3fs). What the fakes cannot show: real Azure RBAC / IAM decisions (the refusal
is the error s3fs builds from S3's ``AccessDenied`` reply) and adlfs's sign-in without a connection string."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
from PIL import Image

from detops.cli import main
from training import storage
from training.errors import AccessDeniedError, ConfigError, DataError, ExitCode

CONFIG = """project: tiny
data:
  format: voc
  path: ${DETOPS_DATASETS}/tiny/SET/Annotations
  images: ${DETOPS_DATASETS}/tiny/SET/JPEGImages
"""


def _dataset(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    """A datasets root holding ``tiny/SET/{Annotations,JPEGImages}`` (``n`` images) and a run config naming it."""
    root = tmp_path / "datasets"
    folder = root / "tiny" / "SET"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (40, 30), (200, 10 * i, 50)).save(folder / "JPEGImages" / f"im{i}.jpg")
        (folder / "Annotations" / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><size><width>40</width><height>30</height><depth>3</depth>"
            f"</size><object><name>cell</name><bndbox><xmin>{2 + i}</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax>"
            "</bndbox></object></annotation>"
        )
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    return root, config


def _upload(capsys, *args: str) -> tuple[int, str]:
    try:
        rc = main(["dataset", "upload", *args])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def _pin(text: str) -> str:
    return re.search(r"data\.sha256: ([0-9a-f]{64})", text).group(1)


def _counts(text: str) -> tuple[int, int]:
    m = re.search(r"(?:uploaded|would upload) (\d+) file\(s\).*skipped (\d+)", text)
    return int(m.group(1)), int(m.group(2))


def _pin_of_copy(config: Path, destination: str, pin: str, monkeypatch) -> str:
    """The hash ``prepare`` computes of the dataset at ``destination`` (``DETOPS_DATASETS``), checked against ``pin``."""
    from training import pipeline

    monkeypatch.setenv("DETOPS_DATASETS", destination)
    monkeypatch.delenv("DETOPS_DATASET_SHA256", raising=False)
    cfg = pipeline.load_run_config(config, overrides=[f"data.sha256={pin}"])
    with pipeline.staged_data(cfg) as local:
        if not storage.is_local(destination):
            assert storage.is_local(local.data.path)  # read from a downloaded copy, as a cloud job does
        records = pipeline.read_config_dataset(local.data).records
        return pipeline.check_dataset_pin(records, local.data, where=destination)  # raises DataError if it differs


def _check_upload(tmp_path, capsys, monkeypatch, destination_args: list[str], destination: str) -> None:
    root, config = _dataset(tmp_path)
    monkeypatch.delenv("DETOPS_DATASETS", raising=False)
    rc, text = _upload(capsys, str(config), "--from", str(root), *destination_args)
    assert rc == ExitCode.OK, text
    assert _counts(text) == (6, 0)
    pin = _pin(text)
    assert _pin_of_copy(config, destination, pin, monkeypatch) == pin
    # the layout below the root is kept
    fs, path = storage.filesystem(storage.join(destination, "tiny/SET"))
    found = sorted(p.removeprefix(path.rstrip("/") + "/") for p in fs.find(path))
    assert found == sorted(
        f"{d}/im{i}.{e}" for i in range(3) for d, e in (("Annotations", "xml"), ("JPEGImages", "jpg"))
    )
    monkeypatch.delenv("DETOPS_DATASETS", raising=False)
    rc, again = _upload(capsys, str(config), "--from", str(root), *destination_args)
    assert rc == ExitCode.OK and _counts(again) == (0, 6) and _pin(again) == pin  # idempotent


def test_upload_to_a_local_folder_keeps_layout_pin_and_skips_unchanged(tmp_path, capsys, monkeypatch):
    dest = str(tmp_path / "stack datasets")
    _check_upload(tmp_path, capsys, monkeypatch, ["--to", dest], dest)
    # one annotation changes: a dry run lists it and copies nothing, the pin printed is the new one
    root, config = tmp_path / "datasets", tmp_path / "run.yaml"
    xml = root / "tiny/SET/Annotations/im0.xml"
    xml.write_text(xml.read_text().replace("<xmax>20</xmax>", "<xmax>21</xmax>"))
    rc, text = _upload(capsys, str(config), "--from", str(root), "--to", dest, "--dry-run")
    assert rc == ExitCode.OK and _counts(text) == (1, 5)
    assert f"would copy {xml} -> {dest}/tiny/SET/Annotations/im0.xml" in text
    assert "<xmax>20</xmax>" in (Path(dest) / "tiny/SET/Annotations/im0.xml").read_text()  # nothing copied
    with pytest.raises(DataError, match="the dataset changed"):
        _pin_of_copy(config, dest, _pin(text), monkeypatch)
    monkeypatch.delenv("DETOPS_DATASETS", raising=False)
    rc, text = _upload(capsys, str(config), "--from", str(root), "--to", dest)
    assert _counts(text) == (1, 5) and _pin_of_copy(config, dest, _pin(text), monkeypatch) == _pin(text)


def test_upload_to_azurite_from_the_stack_outputs(azure_env, tmp_path, capsys, monkeypatch):
    from azure.storage.blob import BlobServiceClient

    container = f"datasets-{secrets.token_hex(4)}"
    BlobServiceClient.from_connection_string(azure_env).create_container(container)
    outputs = tmp_path / "outputs.json"  # what `pulumi stack output --json` of infra/azure gives
    outputs.write_text(
        json.dumps({"DETOPS_DATASETS": f"az://{container}", "AZURE_STORAGE_ACCOUNT_NAME": "devstoreaccount1"})
    )
    _check_upload(tmp_path, capsys, monkeypatch, ["--outputs", str(outputs)], f"az://{container}")


def test_upload_to_moto_s3(aws_env, tmp_path, capsys, monkeypatch):
    import boto3

    boto3.client("s3").create_bucket(Bucket="detops-datasets")
    _check_upload(tmp_path, capsys, monkeypatch, ["--to", "s3://detops-datasets/data"], "s3://detops-datasets/data")


def test_s3_access_denied_is_the_one_line_error(aws_env, tmp_path, capsys, monkeypatch):
    """S3 refuses the put (``AccessDenied``, HTTP 403); s3fs re-raises it as PermissionError
    (s3fs.errors.translate_boto_error, used here as s3fs does): the CLI prints AccessDeniedError's line."""
    import boto3
    import s3fs
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    boto3.client("s3").create_bucket(Bucket="detops-datasets")

    async def refuse(self, *args, **kwargs):  # a coroutine, as s3fs._put_file is (fsspec wraps it as put_file)
        error = ClientError(
            {
                "Error": {"Code": "AccessDenied", "Message": "User is not authorized to perform: s3:PutObject"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            "PutObject",
        )
        raise translate_boto_error(error) from error

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", refuse)
    root, config = _dataset(tmp_path)
    from training.dataset_upload import upload_dataset

    with pytest.raises(AccessDeniedError, match=r"may not write s3://detops-datasets/tiny/SET/.*AccessDenied"):
        upload_dataset(config, str(root), "s3://detops-datasets")
    rc, text = _upload(capsys, str(config), "--from", str(root), "--to", "s3://detops-datasets")
    assert rc == ExitCode.BACKEND and "access denied: the identity in use may not write s3://" in text, text
    assert "Traceback" not in text


def test_bad_inputs_are_clear_errors(tmp_path, capsys, monkeypatch):
    from training.dataset_upload import upload_dataset

    monkeypatch.delenv("DETOPS_DATASETS", raising=False)
    root, config = _dataset(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown scheme ftp://"):
        upload_dataset(config, str(root), "ftp://host/datasets")
    with pytest.raises(DataError, match=r"dataset folder .*nowhere/tiny/SET/Annotations does not exist"):
        upload_dataset(config, str(tmp_path / "nowhere"), str(tmp_path / "dest"))
    elsewhere = tmp_path / "fixed.yaml"
    elsewhere.write_text(CONFIG.replace("${DETOPS_DATASETS}", str(root)))
    with pytest.raises(ConfigError, match=r"not under the datasets root .*DETOPS_DATASETS"):
        upload_dataset(elsewhere, str(tmp_path / "other root"), str(tmp_path / "dest"))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"DETOPS_DATASTORE": "s3://runs"}))
    rc, text = _upload(capsys, str(config), "--from", str(root), "--outputs", str(outputs))
    assert rc == ExitCode.USAGE and "has no DETOPS_DATASETS output" in text
    assert not (tmp_path / "dest").exists()


def test_nested_folders_are_copied_once(tmp_path):
    from training.dataset_upload import dataset_folders

    root, _ = _dataset(tmp_path)
    config = tmp_path / "nested.yaml"
    config.write_text(
        CONFIG.replace("/tiny/SET/Annotations", "/tiny/SET").replace("/tiny/SET/JPEGImages", "/tiny/SET/JPEGImages")
    )
    folders, data = dataset_folders(config, str(root))
    assert folders == [str((root / "tiny/SET").resolve())]
    assert data.images == f"{root}/tiny/SET/JPEGImages"


def test_where_source_and_destination_come_from(aws_env, tmp_path, capsys, monkeypatch):
    """A local DETOPS_DATASETS is the source; --to wins over the outputs file; a cloud DETOPS_DATASETS alone
    is the destination."""
    root, config = _dataset(tmp_path)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"DETOPS_DATASETS": str(tmp_path / "from outputs")}))
    monkeypatch.setenv("DETOPS_DATASETS", str(root))
    rc, text = _upload(capsys, str(config), "--outputs", str(outputs), "--to", str(tmp_path / "from to"))
    assert rc == ExitCode.OK, text
    assert (tmp_path / "from to/tiny/SET/JPEGImages/im0.jpg").is_file() and not (tmp_path / "from outputs").exists()
    rc, text = _upload(capsys, str(config), "--outputs", str(outputs))
    assert rc == ExitCode.OK and (tmp_path / "from outputs/tiny/SET/Annotations/im2.xml").is_file()
    import boto3

    boto3.client("s3").create_bucket(Bucket="detops-datasets")
    monkeypatch.setenv("DETOPS_DATASETS", "s3://detops-datasets")
    rc, text = _upload(capsys, str(config), "--from", str(root), "--dry-run")
    assert rc == ExitCode.OK and "would copy" in text and "-> s3://detops-datasets/tiny/SET/Annotations/im0.xml" in text
