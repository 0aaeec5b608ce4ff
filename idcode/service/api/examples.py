"""Examples in the OpenAPI document, by operation id: one request and one answer for each body,
as the service takes and sends them, so that /docs and /redoc show a reader what to send.

Kept in one place rather than on each model, so they read as one consistent story (the card
enrolled is the card read, its status changed, its code verified) and so the test that checks
each against its schema (tests/service/test_openapi_docs.py) finds them all. The ID number is
the standard's own example (GB 11643), never a person's; the key is RFC 8037's example key.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from idcode.service.settlements import Settlement

CARD_ID = "3f0b8c62-6f1e-4d8a-9a57-2f1c2b7d9e41"
TERMINAL_ID = "8a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
PARTY_ID = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"
DEVICE_ID = "0d9c8b7a-6f5e-4d3c-9b2a-1f0e9d8c7b6a"
SUBJECT = "6b1f0c9e2d4a8f7e3c5b9a1d"
PUBLIC_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
CODE = (
    "WH1:MWGSLK/-4EC88CKKS4FN06ODMNIWY06OD7MIJ-0U+44MKQDIQYDW34V.H$D87MC000W40T70:589QEI03W-"
    "DNSRQPV:CO5R1UJQ0O9GAC/A12TKIPMS3U$N4MM7B8WKQFGRT2EGC SU FLMOIQ7*K9FTP*T1ZDI41HY9478RC0"
)
JWS = "eyJhbGciOiJFZERTQSIsImtpZCI6InJvb3QiLCJ0eXAiOiJKV1QifQ.eyJ2IjoxfQ.c2lnbmF0dXJl"
CARD = {
    "id": CARD_ID,
    "status": "active",
    "status_index": 1042,
    "pseudonym": "8dfa41b662d1",
    "residency": "non_resident",
    "age_band": "age_65_69",
    "programmes": ["home_care", "meal_subsidy"],
    "name_masked": "张**",
    "id_number_masked": "1101**********002X",
    "created_at": "2026-03-01T09:30:00+00:00",
}
TERMINAL = {
    "id": TERMINAL_ID,
    "scene": "community",
    "site": "garden-court",
    "active": True,
    "clock_drift": -2,
    "last_seen_at": "2026-03-01T09:41:12Z",
    "relying_party": None,
}
PARTY = {
    "id": PARTY_ID,
    "name": "武汉市政务服务中心",
    "sector": "government",
    "purposes": ["registration", "benefit_application"],
    "attributes": ["name", "id_number", "residency"],
    "active": True,
    "created_at": "2026-02-20T08:00:00Z",
    "deactivated_at": None,
    "last_seen_at": "2026-03-01T09:40:00Z",
}
DISCLOSURE = {
    "id": 731,
    "at": "2026-03-01T09:40:00Z",
    "relying_party": {"id": PARTY_ID, "name": PARTY["name"], "sector": "government"},
    "purpose": "registration",
    "attributes": ["name", "residency"],
    "counter": "window-3",
}
DEVICE_CREDENTIAL = {
    "id": DEVICE_ID,
    "device_id": "9f3a61c0b2d4e8f7",
    "alg": "EdDSA",
    "label": "my phone",
    "credential": "WH1D:" + JWS,
    "credential_expires_at": 1774000000,
    "server_time": 1772357000,
    "code_prefix": "WH1",
    "code_lifetime": 60,
    "created_at": "2026-03-01T09:30:00Z",
}

#: A shop's day: one customer's two discounts, reimbursed at 5 yuan each (docs/scenes/merchant.md).
SETTLEMENT = Settlement(
    scene="merchant",
    site="riverside-market",
    day=date(2026, 3, 1),
    columns=("uses", "over_cap", "reimbursed_uses", "reimbursed_fen"),
    rows=[
        {
            "subject": SUBJECT,
            "uses": 2,
            "over_cap": 0,
            "reimbursed_uses": 2,
            "reimbursed_fen": 1000,
        }
    ],
    totals={"uses": 2, "over_cap": 0, "reimbursed_uses": 2, "reimbursed_fen": 1000},
    events=2,
    final=True,
)

#: Operation id -> "request" or a status -> media type -> example.
EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "check_liveness": {"200": {"application/json": {"status": "ok"}}},
    "check_readiness": {
        "200": {
            "application/json": {
                "status": "ready",
                "checks": {"database": "ok", "signing_key": "ok", "redis": "ok"},
            }
        }
    },
    "read_issuer_keys": {
        "200": {"application/json": {"keys": [{**PUBLIC_JWK, "kid": "r", "alg": "EdDSA"}]}}
    },
    "issue_code": {
        "request": {"application/json": {"disclose": None}},
        "200": {
            "application/json": {
                "code": CODE,
                "expires_at": "2026-03-01T09:31:00Z",
                "refresh_at": "2026-03-01T09:30:45Z",
                "disclose": None,
            }
        },
    },
    "read_my_card": {
        "200": {
            "application/json": {
                key: CARD[key] for key in ("id", "status", "residency", "age_band", "programmes")
            }
        }
    },
    "issue_visitor_pass": {
        "request": {
            "application/json": {"community": "garden-court", "valid_until": "2026-03-02T18:00:00Z"}
        },
        "200": {
            "application/json": {
                "pass": "WH1P:" + CODE.removeprefix("WH1:"),
                "community": "garden-court",
                "valid_from": "2026-03-01T09:30:00Z",
                "valid_until": "2026-03-02T18:00:00Z",
            }
        },
    },
    "enrol_card": {
        "request": {
            "application/json": {
                "id_number": "11010519491231002X",
                "name": "张秀英",
                "phone": "13800000001",
                "residency": "non_resident",
                "programmes": ["home_care", "meal_subsidy"],
            }
        },
        "201": {"application/json": CARD},
    },
    "import_card_file": {
        "request": {
            "text/csv": "id_number,name,phone,residency,programmes\n"
            "11010519491231002X,张秀英,13800000001,registered,home_care;meal_subsidy\n",
            "application/x-ndjson": '{"id_number": "11010519491231002X", "name": "张秀英", '
            '"programmes": ["meal_subsidy"]}\n',
            "application/jsonl": '{"id_number": "11010519491231002X", "name": "张秀英"}\n',
            "application/jsonlines": '{"id_number": "11010519491231002X", "name": "张秀英"}\n',
        },
        "200": {
            "application/json": {
                "received": 4,
                "imported": 2,
                "unchanged": 1,
                "rejected": 1,
                "dry_run": False,
                "rejections": [
                    {
                        "row": 3,
                        "field": "residency",
                        "reason": "residency must be one of unknown, registered, permit, "
                        "non_resident",
                    }
                ],
                "rejections_truncated": False,
            }
        },
    },
    "read_card": {"200": {"application/json": CARD}},
    "change_card_status": {
        "request": {"application/json": {"action": "suspend", "reason": "suspected_misuse"}},
        "200": {"application/json": {**CARD, "status": "suspended"}},
    },
    "verify_online": {
        "request": {"application/json": {"code": CODE}},
        "200": {
            "application/json": {
                "valid": True,
                "reason": "ok",
                "kid": "r",
                "claims": {
                    "iat": 1796444743,
                    "exp": 1796444803,
                    "cti": "26caa21690c56ce9",
                    "card": {
                        "pseudonym": "8dfa41b662d1",
                        "status_index": 1042,
                        "residency": "non_resident",
                        "age_band": "age_65_69",
                        "programmes": ["home_care"],
                        "programme_bits": 1,
                    },
                },
                "device": None,
                "detail": None,
            }
        },
    },
    "list_terminals": {"200": {"application/json": [TERMINAL]}},
    "register_terminal": {
        "request": {
            "application/json": {
                "scene": "community",
                "site": "garden-court",
                "public_jwk": PUBLIC_JWK,
            }
        },
        "201": {"application/json": {**TERMINAL, "clock_drift": None, "last_seen_at": None}},
    },
    "decommission_terminal": {"200": {"application/json": {**TERMINAL, "active": False}}},
    "read_trust_bundle": {"200": {"application/jwt": JWS}},
    "read_status_list_delta": {"200": {"application/jwt": JWS}},
    "replace_scene_data": {
        "request": {
            "application/json": {
                "residents": ["8dfa41b662d1"],
                "visitors": True,
            }
        },
        "200": {"application/json": {"scene": "community", "site": "garden-court", "version": 4}},
    },
    "upload_events": {
        "request": {
            "application/json": {
                "events": [
                    {
                        "event_id": "garden-court-gate-1:000417",
                        "occurred_at": "2026-03-01T09:30:12Z",
                        "valid": True,
                        "reason": "ok",
                        "scene_result": {"action": "resident"},
                        "subject": SUBJECT,
                    }
                ]
            }
        },
        "200": {"application/json": {"received": 1, "stored": 1, "duplicates": 0}},
    },
    "read_events": {
        "200": {
            "application/json": [
                {
                    "terminal_id": TERMINAL_ID,
                    "event_id": "garden-court-gate-1:000418",
                    "occurred_at": "2026-03-01T09:31:40Z",
                    "valid": False,
                    "reason": "not_resident",
                    "scene_result": {},
                    "subject": SUBJECT,
                }
            ]
        }
    },
    "list_relying_parties": {"200": {"application/json": [PARTY]}},
    "register_relying_party": {
        "request": {
            "application/json": {
                key: PARTY[key] for key in ("name", "sector", "purposes", "attributes")
            }
            | {"public_jwk": PUBLIC_JWK}
        },
        "201": {"application/json": {**PARTY, "last_seen_at": None}},
    },
    "read_relying_party": {"200": {"application/json": PARTY}},
    "deactivate_relying_party": {
        "200": {
            "application/json": {**PARTY, "active": False, "deactivated_at": "2026-03-02T08:00:00Z"}
        }
    },
    "list_party_disclosures": {"200": {"application/json": [{**DISCLOSURE, "card_id": CARD_ID}]}},
    "identify": {
        "request": {
            "application/json": {"code": CODE, "purpose": "registration", "counter": "window-3"}
        },
        "200": {
            "application/json": {
                "subject": SUBJECT,
                "attributes": {"name": "张秀英", "residency": "non_resident"},
                "purpose": "registration",
                "disclosure": 731,
                "identified_at": "2026-03-01T09:40:00Z",
            }
        },
    },
    "list_links": {"200": {"application/json": {"subjects": [SUBJECT]}}},
    "list_my_disclosures": {"200": {"application/json": [DISCLOSURE]}},
    "list_devices": {
        "200": {
            "application/json": {
                "devices": [
                    {
                        "id": DEVICE_ID,
                        "device_id": "9f3a61c0b2d4e8f7",
                        "alg": "EdDSA",
                        "label": "my phone",
                        "created_at": "2026-03-01T09:30:00Z",
                        "renewed_at": None,
                        "credential_expires_at": 1774000000,
                        "removed_at": None,
                    }
                ]
            }
        }
    },
    "register_device": {
        "request": {"application/json": {"public_jwk": PUBLIC_JWK, "label": "my phone"}},
        "201": {"application/json": DEVICE_CREDENTIAL},
    },
    "renew_credential": {"200": {"application/json": DEVICE_CREDENTIAL}},
    "read_settlement": {
        "200": {"application/jsonl": SETTLEMENT.jsonl(), "text/csv": SETTLEMENT.csv()}
    },
    "read_wallet_config": {
        "200": {
            "application/json": {
                "issuer": "https://id.example.gov.cn",
                "authorization_endpoint": "https://id.example.gov.cn/authorize",
                "token_endpoint": "https://id.example.gov.cn/token",
                "client_id": "idcode-wallet",
                "scope": "openid",
                "development": False,
                "server_time": 1772357000,
            }
        }
    },
    "dev_idp_authorize": {
        "request": {
            "application/x-www-form-urlencoded": {
                "response_type": "code",
                "client_id": "idcode-wallet",
                "redirect_uri": "http://127.0.0.1:8000/wallet/",
                "scope": "openid",
                "state": "f3a9c1",
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                "code_challenge_method": "S256",
                "citizen": "0",
            }
        }
    },
    "dev_idp_token": {
        "request": {
            "application/x-www-form-urlencoded": {
                "grant_type": "authorization_code",
                "code": "q8Hk2mZ1",
                "redirect_uri": "http://127.0.0.1:8000/wallet/",
                "client_id": "idcode-wallet",
                "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            }
        },
        "200": {"application/json": {"id_token": JWS, "token_type": "Bearer", "expires_in": 600}},
    },
}


def add_examples(schema: dict[str, Any]) -> None:
    """Put each example on its media type in the OpenAPI document. An example for a body the
    operation does not have is an error (KeyError), so an example cannot outlive its body;
    the tests check that every operation id here is in the development document."""
    operations = {
        operation["operationId"]: operation
        for path_item in schema["paths"].values()
        for operation in path_item.values()
    }
    for operation_id, bodies in EXAMPLES.items():
        operation = operations.get(operation_id)
        if operation is None:  # the development identity provider's, outside development
            continue
        for where, by_media_type in bodies.items():
            holder = (
                operation["requestBody"] if where == "request" else operation["responses"][where]
            )
            for media_type, example in by_media_type.items():
                holder["content"][media_type]["example"] = example
