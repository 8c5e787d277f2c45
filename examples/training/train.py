"""A training job as a team writes it: no MLflow or Azure settings, only mlflow's API.

mlflow-operator's webhook injects MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME and the identity
variables; mlflow and azureml-mlflow read them. The run logs one parameter, one metric, one tag
and one artifact, then prints what landed so the pod's log says where the run went.
"""
import json
import os
import tempfile
import time

import mlflow


INJECTED = ("MLFLOW_", "AZURE_", "AZUREML_")
SECRET = ("PASSWORD", "SECRET", "TOKEN")


def show_environment() -> None:
    """The pod's own view of what was injected (secret values masked)."""
    for name in sorted(os.environ):
        if name.startswith(INJECTED):
            value = os.environ[name]
            if any(s in name for s in SECRET) and not name.endswith("_FILE"):
                value = "<set>"
            print(f"{name}={value}", flush=True)


def start_run() -> mlflow.ActiveRun:
    """Starts a run in MLFLOW_EXPERIMENT_NAME. mlflow creates the experiment when it is missing,
    so the pods of one distributed job (a PyTorchJob's master and workers) race to create it and
    all but one get RESOURCE_ALREADY_EXISTS: by then it exists, and a second start finds it."""
    try:
        return mlflow.start_run()
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.start_run()


def main() -> None:
    show_environment()
    epochs = int(os.environ.get("EPOCHS", "3"))
    # How long an epoch takes: long enough for mlflow's system metrics to sample the run.
    epoch_seconds = float(os.environ.get("EPOCH_SECONDS", "0"))
    with start_run() as run:
        mlflow.log_param("epochs", epochs)
        loss = 1.0
        for epoch in range(epochs):
            time.sleep(epoch_seconds)
            loss *= 0.5
            mlflow.log_metric("loss", loss, step=epoch)
        mlflow.set_tag("trained-by", "mlflow-operator-example")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.txt")
            with open(path, "w") as f:
                f.write(f"a model trained for {epochs} epochs, final loss {loss}\n")
            mlflow.log_artifact(path)
        info = run.info
    print(json.dumps({
        "tracking_uri": mlflow.get_tracking_uri(),
        "experiment_id": info.experiment_id,
        "run_id": info.run_id,
        "status": mlflow.get_run(info.run_id).info.status,
        "final_loss": loss,
    }), flush=True)


if __name__ == "__main__":
    main()
