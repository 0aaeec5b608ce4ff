"""The issuance service: FastAPI application, dependencies, problem responses and routes."""
