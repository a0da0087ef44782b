"""The edge of the pipeline: params.yaml validated into typed objects, atomic writes, device choice."""
