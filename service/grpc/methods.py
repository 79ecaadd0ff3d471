"""What each gRPC method does, over the data plane only: the same calls, the same answers and the same errors
as the HTTP routes of service/protocols/v2.py and repository_api.py, in Triton's messages. Each method takes
its request's bytes and returns its answer's bytes; the router (servicer.py) checks keys and maps errors.
"""

from __future__ import annotations

from typing import Any

from service import __version__
from service.dataplane import CallRecord, DataPlane
from service.dataplane.offload import OFFLOAD_BYTES, OFFLOAD_ROWS, beside_loop_if
from service.errors import BadRequest, NotFound
from service.grpc.codec import encode_infer, model_name, model_version, parse_infer, parse_message
from service.grpc.messages import SERVICE, Context, pb
from service.lifecycle.loader import ServedModel
from service.protocols.exchange import model_headers
from service.protocols.v2 import EXTENSIONS, model_metadata


class Methods:
    """The implemented methods of inference.GRPCInferenceService (the router's table lists them)."""

    service = SERVICE

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    # --- health and metadata ---------------------------------------------------------------------------------

    async def server_live(self, raw: bytes, _context: Context, _call: CallRecord) -> bytes:
        parse_message(pb.ServerLiveRequest, raw)
        return _bytes(pb.ServerLiveResponse(live=True))

    async def server_ready(self, raw: bytes, _context: Context, _call: CallRecord) -> bytes:
        # Ready means at least one model serves, as GET /v2/health/ready (which answers 503 otherwise).
        parse_message(pb.ServerReadyRequest, raw)
        return _bytes(pb.ServerReadyResponse(ready=self.plane.any_ready()))

    async def model_ready(self, raw: bytes, context: Context, _call: CallRecord) -> bytes:
        """ready false for an unknown model or version too, as a tritonclient over HTTP sees it (404 -> False)."""
        request = parse_message(pb.ModelReadyRequest, raw)
        try:
            found = self.plane.find(model_name(request.name), model_version(request.version))
        except (NotFound, BadRequest):
            return _bytes(pb.ModelReadyResponse(ready=False))
        if isinstance(found, ServedModel):
            context.set_trailing_metadata(self._model_metadata_pairs(found))
        return _bytes(pb.ModelReadyResponse(ready=isinstance(found, ServedModel)))

    async def server_metadata(self, raw: bytes, _context: Context, _call: CallRecord) -> bytes:
        parse_message(pb.ServerMetadataRequest, raw)
        return _bytes(pb.ServerMetadataResponse(name="invariant-serve", version=__version__, extensions=EXTENSIONS))

    async def model_metadata(self, raw: bytes, context: Context, _call: CallRecord) -> bytes:
        """Name, versions, platform, inputs and outputs. Triton's message has no `parameters`: the served version,
        checkpoint sha256, numerics fingerprint and replica go in the trailing metadata (x-model-version, ...),
        as the HTTP answer's headers; C and the self-test are in the HTTP metadata."""
        request = parse_message(pb.ModelMetadataRequest, raw)
        name = model_name(request.name)
        found = self.plane.find(name, model_version(request.version))
        metadata = model_metadata(found, self.plane.versions(name))
        response = pb.ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
        )
        for tensor in metadata.get("inputs", []):
            response.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        for tensor in metadata.get("outputs", []):
            response.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        if isinstance(found, ServedModel):
            context.set_trailing_metadata(self._model_metadata_pairs(found))
        return _bytes(response)

    def _model_metadata_pairs(self, served: ServedModel) -> tuple[tuple[str, str], ...]:
        return tuple((name.lower(), value) for name, value in model_headers(served, self.plane.replica).items())

    # --- inference ------------------------------------------------------------------------------------------

    async def model_infer(self, raw: bytes, _context: Context, call: CallRecord) -> bytes:
        parsed = await beside_loop_if(len(raw) >= OFFLOAD_BYTES, parse_infer, raw)
        call.name = self.plane.call_record(call.protocol, parsed.request.model).name  # a known model, or unknown
        answer = await self.plane.infer(parsed.request, call)
        return await beside_loop_if(answer.rows >= OFFLOAD_ROWS, encode_infer, parsed, answer, self.plane.replica)

    # --- the model repository (admin) -----------------------------------------------------------------------

    async def repository_index(self, raw: bytes, _context: Context, _call: CallRecord) -> bytes:
        request = parse_message(pb.RepositoryIndexRequest, raw)
        _one_repository(request.repository_name)
        response = pb.RepositoryIndexResponse()
        for entry in await self.plane.index(request.ready):
            response.models.add(name=entry.name, version=entry.version, state=entry.state.value, reason=entry.reason)
        return _bytes(response)

    async def repository_load(self, raw: bytes, _context: Context, _call: CallRecord) -> bytes:
        request = parse_message(pb.RepositoryModelLoadRequest, raw)
        _one_repository(request.repository_name)
        if request.parameters:
            raise BadRequest(
                f"load parameters are not supported ({sorted(request.parameters)}): "
                "versions load from the repository on disk, as the version policy picks them"
            )
        await self.plane.load(model_name(request.model_name))
        return _bytes(pb.RepositoryModelLoadResponse())

    async def repository_unload(self, raw: bytes, _context: Context, _call: CallRecord) -> bytes:
        request = parse_message(pb.RepositoryModelUnloadRequest, raw)
        _one_repository(request.repository_name)
        unknown = sorted(set(request.parameters) - {"unload_dependents"})  # tritonclient always sends it
        if unknown:
            raise BadRequest(f"unload parameters are not supported: {unknown}")
        await self.plane.unload(model_name(request.model_name))
        return _bytes(pb.RepositoryModelUnloadResponse())


def _one_repository(repository_name: str) -> None:
    """This server has one repository: the name stays empty. A KServe RepositoryModelLoad/Unload request puts
    its model name in this field (its field 1), so it is refused here rather than read as another request."""
    if repository_name:
        raise BadRequest(
            f"repository_name {repository_name[:64]!r}: this server has one repository; leave repository_name "
            "empty and name the model in model_name (Triton's message; KServe's load/unload message differs)"
        )


def _bytes(message: Any) -> bytes:
    encoded: bytes = message.SerializeToString()
    return encoded
