"""The MLServer peer of `cargo xtask bench serve`: a custom MLServer runtime (MLServer's documented way to serve
a model no built-in runtime knows) over the Open Inference Protocol v2, the transform and forward pass of
serving_model.py. MLServer decodes the input tensors with its codecs; the answer is one FP32 output,
`probability`, as trialflow-server's.

    mlserver start <folder with settings.json and model-settings.json naming serve_mlserver.TrialflowRuntime>
"""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from serving_model import BadRequest, ServingModel


class TrialflowRuntime(MLModel):
    async def load(self) -> bool:
        self._model = ServingModel(self.settings.parameters.uri)
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        columns = {}
        for tensor in payload.inputs:
            codec = StringCodec if tensor.datatype == "BYTES" else NumpyCodec
            columns[tensor.name] = codec.decode_input(tensor)
        try:
            p = self._model.predict_columns(columns)
        except BadRequest as e:
            raise MLServerError(str(e), status_code=400)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name="probability", payload=p)],
        )
