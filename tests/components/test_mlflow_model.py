"""The FS-DINO pyfunc model: logged from a train-free tiny checkpoint, loaded back, compared with
:class:`~fsdino.inference.Segmenter`, and served by ``mlflow models serve`` over REST."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from benchmarks.servers import free_port, running
from components.mlflow_model import (
    CHECKPOINT_ARTIFACT,
    ENCODER_ARTIFACT,
    SERVED_PACKAGE_PARTS,
    example_input,
    load_model_artifacts,
    log_fsdino_model,
    model_signature,
    pip_requirements,
    validate_episode,
)
from components.register import register_and_promote
from fsdino.checkpoints import save_checkpoint
from fsdino.errors import InputError
from fsdino.inference import Segmenter
from fsdino.models.build import build_fsdino
from tests.components.mlflow_fixtures import (
    isolated_mlflow_state,
    migrated_store,
    subprocess_env,
    tiny_checkpoint_fixture,  # noqa: F401  (the tiny_checkpoint fixture)
    tiny_model_config,
    use_store,
)


@pytest.fixture(name="logged", scope="module")
def logged_fixture(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The tiny checkpoint logged once to an SQLite store (the module runs inside that isolated store)."""
    folder = tmp_path_factory.mktemp("pyfunc")
    with isolated_mlflow_state():
        tracking_uri = use_store(migrated_store(tmp_path_factory, folder), folder / "mlruns")
        with mlflow.start_run() as run:
            info = log_fsdino_model(tiny_checkpoint)
        yield SimpleNamespace(info=info, run_id=run.info.run_id, tracking_uri=tracking_uri, folder=folder)


@pytest.fixture(name="direct", scope="module")
def direct_fixture(tiny_checkpoint: Path) -> Segmenter:
    """The reference: :class:`Segmenter` on the same checkpoint, without MLflow."""
    return Segmenter.from_checkpoint(tiny_checkpoint)


def _direct_masks(segmenter: Segmenter, request: dict[str, np.ndarray], threshold: float) -> np.ndarray:
    segmenter.set_support(list(request["support_images"]), list(request["support_masks"]))
    return np.stack(segmenter.segment(list(request["query_images"]), threshold)).astype(np.uint8)


def _request(seed: int = 1) -> dict[str, np.ndarray]:
    """Two shots at 30×30 and three queries at another size (42×28)."""
    request = example_input(size=30, shots=2, queries=0, seed=seed)
    request["query_images"] = np.random.default_rng(seed).integers(0, 255, size=(3, 42, 28, 3), dtype=np.uint8)
    return request


def test_validate_episode_rejects_malformed_requests() -> None:
    good = example_input(size=14, shots=2, queries=1)
    images, masks, queries = validate_episode({**good, "support_masks": good["support_masks"].astype(bool)})
    assert images.shape == (2, 14, 14, 3) and masks.dtype == np.uint8 and queries.shape == (1, 14, 14, 3)
    with pytest.raises(InputError, match="missing input"):
        validate_episode({"support_images": good["support_images"]})
    with pytest.raises(InputError, match="expected a dict"):
        validate_episode(good["query_images"])
    with pytest.raises(InputError, match="support_images: expected uint8"):
        validate_episode({**good, "support_images": good["support_images"].astype(np.float32)})
    with pytest.raises(InputError, match=r"query_images: expected N×H×W×3"):
        validate_episode({**good, "query_images": good["query_images"][..., :1]})
    with pytest.raises(InputError, match=r"query_images: expected N×H×W×3 with N ≥ 1"):
        validate_episode({**good, "query_images": good["query_images"][:0]})
    with pytest.raises(InputError, match=r"support_masks: expected shape \(2, 14, 14\)"):
        validate_episode({**good, "support_masks": good["support_masks"][:1]})


def test_signature_leaves_batch_and_image_sizes_free() -> None:
    signature = model_signature(example_input())
    shapes = {spec.name: spec.shape for spec in signature.inputs.inputs}
    assert shapes == {"support_images": (-1, -1, -1, 3), "support_masks": (-1, -1, -1), "query_images": (-1, -1, -1, 3)}
    assert [spec.shape for spec in signature.outputs.inputs] == [(-1, -1, -1)]
    assert {param.name: param.default for param in signature.params} == {"threshold": 0.5}
    assert all("==" in requirement for requirement in pip_requirements() if requirement.startswith(("torch", "mlflow")))


def test_logged_model_is_code_and_weights_without_pickles(logged: SimpleNamespace) -> None:
    local = Path(mlflow.artifacts.download_artifacts(logged.info.model_uri, dst_path=str(logged.folder / "dl")))
    assert not list(local.rglob("*.pkl"))
    assert sorted(p.name for p in (local / "code" / "fsdino").iterdir()) == sorted(SERVED_PACKAGE_PARTS)
    assert (local / "artifacts" / "tiny.pt").is_file() and (local / "serving_input_example.json").is_file()
    model = Model.load(local)
    assert model.metadata["fsdino"] == {
        "variant": "ba_svp_pcs", "image_size": 70, "encoder": "vit_small_patch14_dinov2",
        "fold": 0, "shot": 1, "val_miou": 0.5,
    }  # fmt: skip
    assert model.signature.inputs.input_names() == ["support_images", "support_masks", "query_images"]
    assert model.flavors["python_function"]["config"] == {"device": "auto"}  # overridable at load time


def test_loaded_model_predicts_what_the_segmenter_predicts(logged: SimpleNamespace, direct: Segmenter) -> None:
    model = mlflow.pyfunc.load_model(logged.info.model_uri, model_config={"device": "cpu"})
    request = _request()
    masks = model.predict(request, params={"threshold": 0.3})
    assert masks.shape == (3, 42, 28) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    np.testing.assert_array_equal(masks, _direct_masks(direct, request, 0.3))
    default = model.predict(request)  # threshold 0.5 from the signature's params
    np.testing.assert_array_equal(default, _direct_masks(direct, request, 0.5))
    with pytest.raises(MlflowException, match="support_masks: expected shape"):
        model.predict({**request, "support_masks": request["support_masks"][:, :10]})
    with pytest.raises(MlflowException):  # dtype enforced by the tensor signature
        model.predict({**request, "query_images": request["query_images"].astype(np.int64)})


def test_logged_model_registers_by_its_models_uri(logged: SimpleNamespace) -> None:
    client = mlflow.MlflowClient(logged.tracking_uri)
    result = register_and_promote(logged.info.model_uri, "fsdino-pyfunc", 0.3, client)
    assert result["promoted"] is True and result["run_id"] == logged.run_id
    assert client.get_model_version("fsdino-pyfunc", "1").source == logged.info.model_uri
    champion = mlflow.models.get_model_info("models:/fsdino-pyfunc@champion")
    assert champion.model_uuid == logged.info.model_uuid


def test_local_encoder_weights_travel_with_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    """A checkpoint naming a local DINOv2 .pth gets that file logged, and loads from the logged copy."""
    encoder_path = tmp_path / "dinov2_tiny.pth"
    config = tiny_model_config(str(encoder_path))
    torch.manual_seed(0)
    model = build_fsdino(tiny_model_config())
    with torch.no_grad():
        for parameter in model.encoder.vit.parameters():
            parameter.add_(0.01)  # not the seeded random weights: the loaded model must use this file
    torch.save(model.encoder.vit.state_dict(), encoder_path)
    checkpoint = tmp_path / "with_encoder.pt"
    save_checkpoint(checkpoint, model, config)

    captured: dict = {}
    monkeypatch.setattr(mlflow.pyfunc, "log_model", lambda **kwargs: captured.update(kwargs))
    log_fsdino_model(checkpoint)
    assert captured["artifacts"] == {CHECKPOINT_ARTIFACT: str(checkpoint), ENCODER_ARTIFACT: str(encoder_path)}

    logged_copy = tmp_path / "model" / "artifacts" / encoder_path.name
    logged_copy.parent.mkdir(parents=True)
    encoder_path.rename(logged_copy)  # the training machine's path is gone on the server
    loaded, image_size = load_model_artifacts(
        {CHECKPOINT_ARTIFACT: str(checkpoint), ENCODER_ARTIFACT: str(logged_copy)}
    )
    assert image_size == 70
    expected, actual = model.state_dict(), loaded.state_dict()
    assert list(actual) == list(expected)
    assert all(torch.equal(actual[key], expected[key]) for key in expected)

    with pytest.raises(InputError, match=r"encoder weights .* not found"):
        log_fsdino_model(checkpoint)  # the .pth named in the checkpoint no longer exists
    assert tiny_checkpoint.is_file()


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(logged: SimpleNamespace, direct: Segmenter) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", logged.info.model_uri,
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    ]  # fmt: skip
    env = subprocess_env(MLFLOW_TRACKING_URI=logged.tracking_uri)
    url = f"http://127.0.0.1:{port}"
    request = _request(seed=2)
    payload = {"inputs": {key: value.tolist() for key, value in request.items()}, "params": {"threshold": 0.3}}
    with running(command, env, f"{url}/ping", logged.folder / "serve.log"):
        status, body = _post_json(f"{url}/invocations", payload)
        assert status == 200, body
        masks = np.asarray(body["predictions"], dtype=np.uint8)
        np.testing.assert_array_equal(masks, _direct_masks(direct, request, 0.3))

        mismatched = {
            **payload,
            "inputs": {**payload["inputs"], "support_masks": request["support_masks"][:1].tolist()},
        }
        status, body = _post_json(f"{url}/invocations", mismatched)
        assert status == 400 and "support_masks: expected shape" in body["message"]

        local = Path(mlflow.artifacts.download_artifacts(logged.info.model_uri, dst_path=str(logged.folder / "serve")))
        example = json.loads((local / "serving_input_example.json").read_text())
        status, body = _post_json(f"{url}/invocations", example)  # the example MLflow stored with the model
        assert status == 200 and np.asarray(body["predictions"]).shape == (1, 28, 28)


def _post_json(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
