"""The gRPC server: the Open Inference Protocol's second transport (Triton's `inference.GRPCInferenceService`),
beside service/http on the same floor and the same event loop. Its codec turns a ModelInferRequest into the
data plane's `InferRequest`; the data plane, the keys (service/protocols/access.py) and the errors
(service/errors.py, mapped to gRPC status codes) are the ones HTTP uses. Nothing else imports it but the
composition root (service/cli.py), which hands `GrpcServer` to the HTTP app's lifespan."""
