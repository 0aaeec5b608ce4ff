"""The issuance service: settings, storage, personal data, shared state, auth, the HTTP
API and the service's CLI commands. Built on the core (``idcode.*``); never imports
``idcode.terminal``."""
