"""The reference device wallet (``idcode wallet``): a citizen's device key, the credential the
service certifies it with, and device codes made from them with no network
(docs/code-format.md section 8, docs/wallet-cli.md).

A third application on the core, beside the service and the terminal: it imports only the
core and itself, and needs no extra (``idcode[qr]`` for ``idcode wallet qr``).
"""
