"""The KServe peer of `cargo xtask bench serve`: a custom `kserve.Model` on KServe's Python ModelServer (the
predictor a KServe InferenceService runs for a custom model), speaking both of KServe's protocols: v1
(`/v1/models/<name>:predict`, TF Serving's `instances`) and v2 (the Open Inference Protocol). The transform
and forward pass are serving_model.py's.

    python serve_kserve.py --model_dir <repo>/<model>/<version> --model_name model_2 --http_port N
"""

import argparse
import logging
import uuid

import kserve
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput

from serving_model import BadRequest, ServingModel


class TrialflowModel(Model):
    def __init__(self, name, model_dir):
        super().__init__(name)
        self.model_dir = model_dir
        self.load()

    def load(self):
        self._model = ServingModel(self.model_dir)
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):
        try:
            if isinstance(payload, InferRequest):
                columns = {}
                for tensor in payload.inputs:
                    columns[tensor.name] = tensor.data if tensor.datatype == "BYTES" else tensor.as_numpy()
                p = self._model.predict_columns(columns)
                out = InferOutput(name="probability", shape=list(p.shape), datatype="FP32")
                out.set_data_from_numpy(p)
                return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4()))
            return {"predictions": self._model.predict_rows(payload.get("instances")).tolist()}
        except BadRequest as e:
            raise InvalidInput(str(e))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    # REST only (the bench's load is HTTP); no line logged per request (trialflow-server logs none either)
    server = ModelServer(http_port=args.http_port, workers=args.workers, enable_grpc=False,
                         enable_latency_logging=False)
    for quiet in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    server.start([TrialflowModel(args.model_name, args.model_dir)])
