"""A registered model that works wherever MLflow does: its own code and third-party pins, the sklearn flavour, the
run and version descriptions, and versions logged by older code.

The round trip makes a fresh environment with `--env-manager uv` (uv resolves the model's requirements.txt from
the package registry). MLflow's other manager, `virtualenv`, needs pyenv to download a Python build, which
cannot work on these machines (only the package registries are reachable): it is not tested.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_features import ODD
from training_support import VENV_BIN, cli_env, seed_ml_data, synthetic_rows

from devservers.ports import free_port
from devservers.processes import running
from intelrouter import model_package, registry, tracking
from intelrouter.classifiers import make_classifier
from intelrouter.config import load_settings
from intelrouter.features import TextFeatures
from intelrouter.jobs import train
from intelrouter.loading import load_router
from intelrouter.model import Router, make_pipeline
from intelrouter.static import StaticEncoder, WordPiece

FIXTURE = Path(__file__).parent / "fixtures" / "model-before-recut"
TEXTS = ["what is the weather in paris", "book a flight to rome please", "play the tokyo playlist",
         "set an alarm for 7 am", "who won the lima marathon", "hello there", *ODD]
HEAVY = ("config", "store", "registry", "tracking", "jobs", "loading", "data", "evaluate", "train", "logwriter",
         "report", "dashboard", "static_table", "model_package")


def _router(classifier: str = "lr", static: bool = False) -> Router:
    rows = synthetic_rows(20, seed=3)
    features = TextFeatures(static="mean3-pca256-zipf") if static else TextFeatures()
    pipe = make_pipeline(features, make_classifier(classifier, C=5))
    encoder = None
    if static:  # a hand-made vocabulary and table: the block's code path without the MiniLM wheel
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "weather", "flight", "music", "alarm", "##s", "paris"]
        encoder = StaticEncoder(WordPiece.from_tokens(tokens), np.random.default_rng(0).normal(size=(10, 8)))
    pipe.fit([r["text"] for r in rows], [r["label"] for r in rows], features__static_encoder=encoder)
    if hasattr(pipe.steps[-1][1], "calibrate"):
        val = synthetic_rows(5, seed=4)
        pipe.steps[-1][1].calibrate(pipe.steps[0][1].transform([r["text"] for r in val]), [r["label"] for r in val])
    return Router(pipe, 0.5)


class _Recorder(pickle.Unpickler):
    """Records the modules a pickle's classes and functions come from."""

    modules: set[str]

    def find_class(self, module: str, name: str) -> Any:
        self.modules.add(module)
        return super().find_class(module, name)


def _pickled_modules(path: Path) -> set[str]:
    with path.open("rb") as fh:
        recorder = _Recorder(fh)
        recorder.modules = set()
        recorder.load()
    return {m.split(".", 1)[1] for m in recorder.modules if m.startswith("intelrouter.")}


def test_model_code_is_the_model_modules_and_their_pins_only() -> None:
    plain, static = model_package.model_modules(), model_package.model_modules(static=True)
    assert {"model", "features", "classifiers", "lean", "text", "signals", "names", "errors"} <= set(plain)
    assert plain[0] == "__init__" and "static" not in plain and set(static) == {*plain, "static"}
    assert not set(static) & set(HEAVY), "a model module pulls in the store, the settings or the servers"
    pins = model_package.model_requirements()
    assert {p.split("==")[0] for p in pins} == {"mlflow", "nltk", "numpy", "pandas", "scipy", "scikit-learn"}
    assert all(p.count("==") == 1 and p.split("==")[1][0].isdigit() for p in pins)


# a fresh interpreter that sees the copied model code and the third-party packages, never the repository: no
# PYTHONPATH (-I), and no site hooks (-S), so the editable install's finder is not there either
ISOLATED = """
import importlib.util, json, sys
code, site, pickles, texts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
sys.path[:0] = [code]
sys.path += site
from intelrouter.model import Router
import intelrouter
answers = {p: [x.as_dict() for x in Router.load(p).predict(texts)] for p in pickles}
print(json.dumps({"answers": answers, "package": intelrouter.__file__, "modules": sorted(
    m for m in sys.modules if m.startswith("intelrouter")), "config": importlib.util.find_spec("intelrouter.config")
    is not None}))
"""


@pytest.mark.parametrize("static", [False, True], ids=["tfidf", "static-block"])
def test_model_code_loads_and_predicts_with_the_rest_of_the_package_out_of_reach(tmp_path: Path,
                                                                                   static: bool) -> None:
    routers = {"mb": _router("mb", static=True)} if static else {
        name: _router(name) for name in ("lr", "svc", "ens", "mb")}
    paths = {name: router.save(tmp_path / f"{name}.pkl") for name, router in routers.items()}
    for path in paths.values():
        assert _pickled_modules(path) <= set(model_package.model_modules(static)), path.name
    code = model_package.write_model_code(tmp_path / "code", static).parent
    assert sorted(p.stem for p in (code / "intelrouter").iterdir()) == sorted(model_package.model_modules(static))
    site = [p for p in sys.path if p.endswith("site-packages")]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", ISOLATED, str(code), json.dumps(site),
         json.dumps([str(p) for p in paths.values()]), json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=cli_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["package"] == str(code / "intelrouter" / "__init__.py") and not out["config"]
    assert {m.split(".")[-1] for m in out["modules"]} - {"intelrouter"} <= set(model_package.model_modules(static))
    for name, path in paths.items():
        assert out["answers"][str(path)] == [p.as_dict() for p in routers[name].predict(TEXTS)], name


def _fresh_env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    """MLflow's CLI with nothing of this repository importable, and caches of the test's own."""
    env = {k: v for k, v in cli_env().items() if not k.startswith(("INTELROUTER_", "PYTHON", "VIRTUAL_ENV"))}
    base_python = Path(sys._base_executable).resolve().parent  # uv makes the env from the base interpreter
    for name in ("tmp", "uv-cache", "envs"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(PATH=f"{VENV_BIN}:{base_python}:/usr/bin:/bin", MLFLOW_TRACKING_URI=tracking_uri,
               UV_CACHE_DIR=str(tmp_path / "uv-cache"), MLFLOW_ENV_ROOT=str(tmp_path / "envs"),
               TMPDIR=str(tmp_path / "tmp"), UV_PYTHON_DOWNLOADS="never")
    return env


@pytest.mark.slow
@pytest.mark.embedded  # a local SQLite tracking store by design; once per CI run
def test_registered_model_predicts_and_serves_in_a_fresh_uv_environment(settings, tmp_path: Path) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(25, oos=10))
    result = train(settings, min_samples=20)
    uri = f"models:/{settings.model_name}@production"
    router = load_router(uri, settings.tracking_uri)
    expected = [p.as_dict() for p in router.predict(TEXTS)]
    assert expected == [router.predict_one(t).as_dict() for t in TEXTS]  # what `intelrouter serve` answers
    env, work = _fresh_env(tmp_path, settings.tracking_uri), tmp_path / "work"
    work.mkdir()
    body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
    (work / "input.json").write_text(json.dumps(body))

    started = time.perf_counter()
    done = subprocess.run([str(VENV_BIN / "mlflow"), "models", "predict", "-m", uri, "--env-manager", "uv",
                           "-i", "input.json", "-o", "out.json"], env=env, cwd=work, capture_output=True, text=True,
                          timeout=900)
    predict_s = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads((work / "out.json").read_text())["predictions"] == expected  # every float to the last bit

    port = free_port()
    started = time.perf_counter()
    with running("mlflow-models-serve", [str(VENV_BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager",
                                         "uv", "-h", "127.0.0.1", "-p", str(port)], env, f"http://127.0.0.1:{port}/ping",
                 work):
        serve_s = time.perf_counter() - started
        res = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert res.status_code == 200, res.text
        assert res.json()["predictions"] == expected
    print(f"\nuv round trip: predict (env made from an empty cache) {predict_s:.1f} s, serve ready {serve_s:.1f} s")

    # the environment MLflow made holds the model's pins and not this repository; the sklearn flavour loads there too
    pythons = list((tmp_path / "envs").glob("*/bin/python"))
    assert len(pythons) == 1, pythons
    script = ("import importlib.util, json, sys, mlflow\n"
              "assert importlib.util.find_spec('intelrouter') is None, 'intelrouter is installed'\n"
              "pipe = mlflow.sklearn.load_model(sys.argv[1])\n"
              "print(json.dumps(pipe.predict_proba(json.loads(sys.argv[2])).tolist()))\n")
    done = subprocess.run([str(pythons[0]), "-c", script, f"runs:/{result.run_id}/{tracking.SKLEARN_MODEL}",
                           json.dumps(TEXTS)], env=env | {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}, cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(json.loads(done.stdout.strip().splitlines()[-1]), router.predict_proba(TEXTS),
                               rtol=1e-5, atol=1e-7)


@pytest.fixture
def tracking_server(tmp_path: Path) -> Any:
    """A real `mlflow server` on a SQLite store, proxying artifacts to a tmp dir."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port",
            str(port), "--workers", "1"]
    with running("mlflow-server", args, cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), f"{url}/health",
                 tmp_path / "mlflow-server"):
        yield url


def _rest(url: str, path: str, **params: str) -> dict[str, Any]:
    res = httpx.get(f"{url}/api/2.0/mlflow/{path}", params=params, timeout=30)
    assert res.status_code == 200, res.text
    return res.json()


@pytest.mark.embedded  # its own tracking server on SQLite: once per CI run
def test_runs_and_versions_carry_their_description_and_the_sklearn_pipeline(
    settings, tracking_server: str, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    import mlflow
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    remote = load_settings(mlflow_tracking_uri=tracking_server)
    seed_ml_data(settings, synthetic_rows(25, oos=10, seed=1))
    first = train(remote, min_samples=20)
    seed_ml_data(settings, synthetic_rows(15, seed=2))
    second = train(remote, min_samples=20)
    assert (first.lifecycle, second.lifecycle) == ("production", "canary")

    for result, baseline in ((first, False), (second, True)):
        run = _rest(tracking_server, "runs/get", run_id=result.run_id)["run"]
        note = {t["key"]: t["value"] for t in run["data"]["tags"]}[tracking.NOTE_TAG]
        version = _rest(tracking_server, "model-versions/get", name=remote.model_name,
                        version=result.version)["model_version"]
        assert version["description"] == note  # the registry page reads as the run page
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert f"train {params['train_rows']}, val {params['val_rows']}, test {params['test_rows']}" in note
        digest = {t["key"]: t["value"] for t in run["data"]["tags"]}["data_digest"]
        assert f"`{digest[:16]}`" in note and f"threshold {result.threshold:.4f}" in note
        assert f"policy `{params['threshold_policy_used']}`" in note and "gate **passed**" in note
        assert f"| test | {int(result.metrics['test_rows'])} | {result.metrics['test_accuracy']:.4f} |" in note
        assert "| recent |" in note and all(f"- {reason}" in note for reason in result.gate.reasons)
        assert ("@production accuracy" in note) == baseline and ("vs production" in note) == baseline

    # the run's sklearn model is the fitted pipeline; the registered version stays the pyfunc
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # MLflow 3.17 asks it for every sklearn format
    mlflow.set_tracking_uri(tracking_server)
    pipe = mlflow.sklearn.load_model(f"runs:/{second.run_id}/{tracking.SKLEARN_MODEL}")
    router = load_router(registry.model_uri(remote, second.version), tracking_server)
    assert isinstance(pipe, Pipeline) and list(pipe.classes_) == router.labels
    assert clone(pipe).get_params()["classifier__C"] == pipe.get_params()["classifier__C"]
    proba = pipe.predict_proba(TEXTS)  # calibrated like the router's: the classifier divides by its temperature
    np.testing.assert_allclose(proba, router.predict_proba(TEXTS), rtol=1e-5, atol=1e-7)
    assert router.info["temperature"] != 1.0 and list(pipe.predict(TEXTS)) == [
        p.top_label for p in router.predict(TEXTS)]
    local = mlflow.artifacts.download_artifacts(registry.model_uri(remote, second.version))
    mlmodel = (Path(local) / "MLmodel").read_text()
    assert "mlflow.pyfunc.loaders.code_model" in mlmodel and "sklearn" not in mlmodel.split("flavors:")[1][:200]


@pytest.mark.embedded  # the store is incidental: the model format is what is tested, once
def test_a_version_logged_by_the_previous_code_is_served_by_intelrouter_serve(settings, tmp_path: Path) -> None:  # noqa: ANN001
    expected = json.loads((FIXTURE / "expected.json").read_text())
    assert "intelrouter==0.1.0" in (FIXTURE / "requirements.txt").read_text()  # the old format, no code_paths
    client = registry.get_client(settings)
    run = client.create_run(tracking.ensure_experiment(settings), run_name="before-recut")
    client.log_artifacts(run.info.run_id, str(FIXTURE), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(settings.model_name)
    mv = client.create_model_version(settings.model_name, f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias(settings.model_name, "production", mv.version)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cli_env(INTELROUTER_DATABASE_URL=settings.database_url, INTELROUTER_DATA_DIR=str(settings.data_dir),
                  INTELROUTER_MLFLOW_TRACKING_URI=settings.tracking_uri, INTELROUTER_MODEL_NAME=settings.model_name)
    with running("intelrouter-serve", [str(VENV_BIN / "intelrouter"), "serve", "--port", str(port)], env,
                 f"{base}/health", tmp_path / "serve"):
        assert httpx.get(f"{base}/health").json()["versions"]["production"] == str(mv.version)
        for text, want in zip(expected["texts"], expected["predictions"], strict=True):
            got = httpx.post(f"{base}/route", json={"text": text}, timeout=30).json()
            assert {k: got[k] for k in want} == want, text
            assert got["model_version"] == str(mv.version)

