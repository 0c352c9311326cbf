"""Conformance of the emulator with the official API descriptions.

Every answer is checked for its status code and validated against the schema that the official
description gives for that operation and status (Key Vault's Swagger, Graph's OpenAPI; for
Entra, which has no machine-readable description, `entra-responses.schema.json`). The last test
fails when an operation the emulator serves was not exercised with both a success and an error.
"""

import hashlib
import json
import time
import uuid

import jsonschema
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from conftest import SPECS, new_id

GRAPH = "https://graph.microsoft.com/.default"
VAULT = "https://vault.azure.net/.default"
KV_VERSIONS = ["7.5", "7.6", "2025-07-01", "2026-04-01"]


# ---- the descriptions -------------------------------------------------------------------------


def test_spec_files_are_unmodified_copies():
    for line in (SPECS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        actual = hashlib.sha256((SPECS / name.strip()).read_bytes()).hexdigest()
        assert actual == digest, f"{name} differs from the copied description"


KV_SPECS = {v: json.loads((SPECS / f"keyvault-secrets-{v}.json").read_text()) for v in ["2025-07-01", "2026-04-01"]}
GRAPH_SPEC = yaml.safe_load((SPECS / "msgraph-v1.0-openapi-applications-password-subset.yaml").read_text())


def open_types(node):
    """Graph's generator marks every entity as an open type with `additionalProperties: {type:
    object}`. Under `allOf` that makes JSON Schema treat each property declared in a sibling
    branch as an extra one that must be an object, so no real Graph answer would validate. The
    marker is dropped (in memory; the file stays a verbatim copy), and undeclared properties are
    checked separately below."""
    if isinstance(node, dict):
        if node.get("additionalProperties") == {"type": "object"}:
            del node["additionalProperties"]
        for v in node.values():
            open_types(v)
    elif isinstance(node, list):
        for v in node:
            open_types(v)


open_types(GRAPH_SPEC)
ONBOARDING_SPEC = yaml.safe_load((SPECS / "msgraph-v1.0-openapi-applications-onboarding-subset.yaml").read_text())
open_types(ONBOARDING_SPEC)
ARM_ASSIGNMENTS = json.loads((SPECS / "authorization-roleassignments-2022-04-01.json").read_text())
ARM_DEFINITIONS = json.loads((SPECS / "authorization-roledefinitions-list-2022-04-01-subset.json").read_text())
ENTRA_SCHEMA = json.loads((SPECS / "entra-responses.schema.json").read_text())


def declared(definitions, schema):
    """Property names a Swagger definition declares, through $ref and allOf."""
    if "$ref" in schema:
        return declared(definitions, definitions[schema["$ref"].split("/")[-1]])
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= declared(definitions, part)
    return names


def check_kv(body, definition, version="2025-07-01"):
    spec = KV_SPECS.get(version, KV_SPECS["2025-07-01"])
    schema = {"$ref": f"#/definitions/{definition}", "definitions": spec["definitions"]}
    jsonschema.Draft4Validator(schema).validate(body)
    # The descriptions do not forbid extra properties; the real service sends none, nor may we.
    extra = set(body) - declared(spec["definitions"], {"$ref": f"#/definitions/{definition}"})
    assert not extra, f"{definition} has undeclared properties {extra}"
    if definition.endswith("ListResult"):
        item = spec["definitions"][definition]["properties"]["value"]["items"]
        for entry in body["value"]:
            assert not set(entry) - declared(spec["definitions"], item), entry


def graph_declared(schema, spec=None):
    spec = spec or GRAPH_SPEC
    if "$ref" in schema:
        return graph_declared(spec["components"]["schemas"][schema["$ref"].split("/")[-1]], spec)
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []) + schema.get("anyOf", []):
        names |= graph_declared(part, spec)
    return names


def check_graph(body, schema_name, spec=None):
    spec = spec or GRAPH_SPEC
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    OAS30Validator(schema).validate(body)
    extra = {k for k in body if not k.startswith("@odata.")} - graph_declared({"$ref": f"#/components/schemas/{schema_name}"}, spec)
    assert not extra, f"{schema_name} has undeclared properties {extra}"


def check_arm(body, spec, definition):
    schema = {"$ref": f"#/definitions/{definition}", "definitions": spec["definitions"]}
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)
    extra = set(body) - declared(spec["definitions"], {"$ref": f"#/definitions/{definition}"})
    assert not extra, f"{definition} has undeclared properties {extra}"


def check_entra(body, definition):
    schema = {"$ref": f"#/definitions/{definition}", "definitions": ENTRA_SCHEMA["definitions"]}
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)


# ---- the tenant -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant(emulator):
    emulator.settings(propagation_min_ms=0, propagation_max_ms=0, read_lag_ms=0, concurrency_window_ms=0)
    admin, reader, stranger, owned_by = new_id(), new_id(), new_id(), new_id()
    secret = "conformance-secret-Q~" + uuid.uuid4().hex
    past = {"display_name": "old", "secret_text": "expired-secret-Q~" + uuid.uuid4().hex, "start_date_time": "2020-01-01T00:00:00Z", "end_date_time": "2021-01-01T00:00:00Z"}
    report = emulator.seed({
        "applications": [
            {"app_id": admin, "display_name": "admin", "graph_roles": ["Application.ReadWrite.All"], "password_credentials": [{"secret_text": secret}, past]},
            {"app_id": reader, "display_name": "reader", "graph_roles": ["Application.Read.All"], "password_credentials": [{"secret_text": secret + "r"}]},
            {"app_id": stranger, "display_name": "stranger", "password_credentials": [{"secret_text": secret + "s"}]},
            {"app_id": owned_by, "display_name": "owned-by", "graph_roles": ["Application.ReadWrite.OwnedBy"], "password_credentials": [{"secret_text": secret + "o"}]},
            {"display_name": "target", "owners": [owned_by], "key_credentials": [{"display_name": "CN=conformance", "end_date_time": "2030-01-01T00:00:00Z"}]},
            {"display_name": "not-owned"},
            {"display_name": "consumer", "sign_in_audience": "AzureADandPersonalMicrosoftAccount", "owners": [owned_by]},
            {"display_name": "identity", "managed_identity": True, "graph_roles": ["Application.Read.All"]},
        ],
        "vaults": [{"name": "conformance-kv", "access": {admin: "officer", reader: "user"}}],
    })
    apps = {a["display_name"]: a for a in report["applications"]}
    return {
        "tenant": report["tenant_id"],
        "vault": report["vaults"]["conformance-kv"],
        "apps": apps,
        "secret": secret,
        "expired": past["secret_text"],
        "ids": {"admin": admin, "reader": reader, "stranger": stranger, "owned_by": owned_by},
    }


def token_request(emulator, tenant, client_id, secret, scope, tenant_id=None):
    url = f"{emulator.info['authority_host']}/{tenant_id or tenant['tenant']}/oauth2/v2.0/token"
    return emulator.http.post(url, data={"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials", "scope": scope})


def token(emulator, tenant, who, scope, suffix=""):
    r = token_request(emulator, tenant, tenant["ids"][who], tenant["secret"] + suffix, scope)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


# ---- Entra ------------------------------------------------------------------------------------


def test_token_endpoint_success_and_errors(emulator, tenant):
    r = token_request(emulator, tenant, tenant["ids"]["admin"], tenant["secret"], GRAPH)
    assert r.status_code == 200
    check_entra(r.json(), "TokenResponse")
    assert isinstance(r.json()["expires_in"], int)

    cases = [
        (tenant["ids"]["admin"], "wrong-secret", GRAPH, None, 401, "invalid_client", 7000215),
        (tenant["ids"]["admin"], tenant["expired"], GRAPH, None, 401, "invalid_client", 7000222),
        (new_id(), "whatever", GRAPH, None, 400, "unauthorized_client", 700016),
        (tenant["ids"]["admin"], tenant["secret"], "https://graph.microsoft.com/User.Read", None, 400, "invalid_scope", 1002012),
        (tenant["ids"]["admin"], tenant["secret"], f"{GRAPH} {VAULT}", None, 400, "invalid_scope", 70011),
        (tenant["ids"]["admin"], tenant["secret"], GRAPH, new_id(), 400, "invalid_request", 90002),
    ]
    for client, secret, scope, tenant_id, status, error, code in cases:
        r = token_request(emulator, tenant, client, secret, scope, tenant_id)
        assert r.status_code == status, (code, r.text)
        check_entra(r.json(), "TokenError")
        assert r.json()["error"] == error and r.json()["error_codes"] == [code], r.text

    r = emulator.http.post(f"{emulator.info['authority_host']}/{tenant['tenant']}/oauth2/v2.0/token", data={"client_id": tenant["ids"]["admin"], "grant_type": "password", "scope": GRAPH})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    check_entra(r.json(), "TokenError")


def test_discovery_document(emulator, tenant):
    r = emulator.http.get(f"{emulator.info['authority_host']}/{tenant['tenant']}/v2.0/.well-known/openid-configuration")
    assert r.status_code == 200
    check_entra(r.json(), "OpenIdConfiguration")
    r = emulator.http.get(f"{emulator.info['authority_host']}/{new_id()}/v2.0/.well-known/openid-configuration")
    assert r.status_code == 400
    check_entra(r.json(), "TokenError")


def test_managed_identity_endpoints(emulator, tenant):
    import requests

    plain = requests.Session()
    plain.trust_env = False
    endpoint = emulator.info["identity_endpoint"]
    r = plain.get(endpoint, params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"}, headers={"X-IDENTITY-HEADER": emulator.info["identity_header"]})
    assert r.status_code == 200, r.text
    check_entra(r.json(), "AppServiceToken")
    r = plain.get(endpoint, params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"})
    assert r.status_code == 401
    check_entra(r.json(), "ManagedIdentityError")
    # The IMDS shape, on the same listener: conformance only (IMDS lives at 169.254.169.254).
    imds = endpoint.replace("/msi/token", "/metadata/identity/oauth2/token")
    r = plain.get(imds, params={"api-version": "2018-02-01", "resource": "https://vault.azure.net"}, headers={"Metadata": "true"})
    assert r.status_code == 200, r.text
    check_entra(r.json(), "ImdsToken")
    r = plain.get(imds, params={"api-version": "2018-02-01", "resource": "https://vault.azure.net"})
    assert r.status_code == 400
    check_entra(r.json(), "ManagedIdentityError")


# ---- Graph ------------------------------------------------------------------------------------


def graph(emulator, method, path, tok=None, **kw):
    headers = kw.pop("headers", {})
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    return emulator.http.request(method, f"{emulator.info['graph_endpoint']}/v1.0{path}", headers=headers, **kw)


def error_graph(r, status, code):
    assert r.status_code == status, r.text
    check_graph(r.json(), "microsoft.graph.ODataErrors.ODataError")
    assert r.json()["error"]["code"] == code, r.text


def test_graph_reads(emulator, tenant):
    tok = token(emulator, tenant, "admin", GRAPH)
    target = tenant["apps"]["target"]
    for path in [f"/applications/{target['id']}", f"/applications(appId='{target['app_id']}')"]:
        r = graph(emulator, "GET", path, tok)
        assert r.status_code == 200, r.text
        check_graph(r.json(), "microsoft.graph.application")
        r = graph(emulator, "GET", path + "?$select=id,appId,passwordCredentials", tok)
        assert r.status_code == 200
        assert set(r.json()) == {"@odata.context", "id", "appId", "passwordCredentials"}
        check_graph(r.json(), "microsoft.graph.application")
    r = graph(emulator, "GET", f"/applications?$filter=appId eq '{target['app_id']}'&$select=id,appId", tok)
    assert r.status_code == 200
    check_graph(r.json(), "microsoft.graph.applicationCollectionResponse")
    assert [a["id"] for a in r.json()["value"]] == [target["id"]]

    error_graph(graph(emulator, "GET", f"/applications/{new_id()}", tok), 404, "Request_ResourceNotFound")
    error_graph(graph(emulator, "GET", f"/applications/{target['id']}"), 401, "InvalidAuthenticationToken")
    error_graph(graph(emulator, "GET", f"/applications/{target['id']}", token(emulator, tenant, "admin", VAULT)), 401, "InvalidAuthenticationToken")
    error_graph(graph(emulator, "GET", f"/applications/{target['id']}?$select=nope", tok), 400, "Request_BadRequest")
    error_graph(graph(emulator, "GET", "/applications?$filter=appId gt 'x'", tok), 400, "Request_UnsupportedQuery")
    error_graph(graph(emulator, "GET", f"/applications/{target['id']}", token(emulator, tenant, "stranger", GRAPH, "s")), 403, "Authorization_RequestDenied")


def test_graph_tenant_listing(emulator, tenant):
    """The inventory's listing: pages linked by @odata.nextLink, $select, certificate credentials,
    and a 403 for a caller without a tenant-wide read permission."""
    tok = token(emulator, tenant, "reader", GRAPH, "r")
    select = "$select=id,appId,displayName,passwordCredentials,keyCredentials"
    r = graph(emulator, "GET", f"/applications?{select}&$top=2", tok)
    seen, pages = [], 0
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        check_graph(body, "microsoft.graph.applicationCollectionResponse")
        pages += 1
        for app in body["value"]:
            assert set(app) == {"id", "appId", "displayName", "passwordCredentials", "keyCredentials"}, app
            check_graph(app, "microsoft.graph.application")
            seen.append(app["id"])
        link = body.get("@odata.nextLink")
        if not link:
            break
        assert link.startswith(emulator.info["graph_endpoint"]), link
        r = emulator.http.get(link, headers={"Authorization": f"Bearer {tok}"})
    assert pages >= 4 and len(seen) == len(set(seen)), "pages of two, no application twice"
    target = tenant["apps"]["target"]
    assert target["id"] in seen
    r = graph(emulator, "GET", f"/applications/{target['id']}?$select=keyCredentials", tok)
    [cert] = r.json()["keyCredentials"]
    check_graph(cert, "microsoft.graph.keyCredential")
    assert cert["displayName"] == "CN=conformance" and cert["type"] == "AsymmetricX509Cert" and cert["usage"] == "Verify"
    assert cert["endDateTime"].startswith("2030-01-01T00:00:00")
    owned = token(emulator, tenant, "owned_by", GRAPH, "o")
    error_graph(graph(emulator, "GET", f"/applications?{select}", owned), 403, "Authorization_RequestDenied")
    r = graph(emulator, "GET", f"/applications?$filter=appId eq '{target['app_id']}'&$select=id", owned)
    assert r.status_code == 200, "a filtered read stays open to OwnedBy"


def test_graph_add_and_remove_password(emulator, tenant):
    owned = token(emulator, tenant, "owned_by", GRAPH, "o")
    target = tenant["apps"]["target"]
    keys = []
    paths = [
        f"/applications/{target['id']}/addPassword",
        f"/applications/{target['id']}/microsoft.graph.addPassword",
        f"/applications(appId='{target['app_id']}')/addPassword",
        f"/applications(appId='{target['app_id']}')/microsoft.graph.addPassword",
    ]
    for path in paths:
        r = graph(emulator, "POST", path, owned, json={"passwordCredential": {"displayName": "conformance", "endDateTime": "2299-12-31T23:59:59Z"}})
        assert r.status_code == 200, r.text
        body = r.json()
        check_graph(body, "microsoft.graph.passwordCredential")
        assert len(body["secretText"]) == 40 and body["secretText"][4:6] == "Q~"
        assert body["hint"] == body["secretText"][:3]
        assert body["endDateTime"] == "2299-12-31T23:59:59Z", "a date the client sent is echoed as sent"
        assert len(body["startDateTime"].split(".")[1]) == 8, "server-made dates have 7 fractional digits"
        keys.append(body["keyId"])
    r = graph(emulator, "GET", f"/applications/{target['id']}", owned)
    listed = {p["keyId"]: p for p in r.json()["passwordCredentials"]}
    assert set(keys) <= set(listed)
    assert all(p["secretText"] is None for p in listed.values()), "secretText only in the addPassword answer"

    for i, key in enumerate(keys):
        action = "removePassword" if i % 2 else "microsoft.graph.removePassword"
        r = graph(emulator, "POST", f"/applications/{target['id']}/{action}", owned, json={"keyId": key})
        assert r.status_code == 204 and r.content == b""
    r = graph(emulator, "POST", f"/applications/{target['id']}/removePassword", owned, json={"keyId": keys[0]})
    error_graph(r, 400, "Request_BadRequest")
    assert "No password credential found with keyId" in r.json()["error"]["message"]
    error_graph(graph(emulator, "POST", f"/applications/{target['id']}/removePassword", owned, json={"keyId": "not-a-guid"}), 400, "Request_BadRequest")
    error_graph(graph(emulator, "POST", f"/applications/{target['id']}/addPassword", owned, data="{not json", headers={"Content-Type": "application/json"}), 400, "BadRequest")


def test_graph_permissions_and_limits(emulator, tenant):
    owned = token(emulator, tenant, "owned_by", GRAPH, "o")
    reader = token(emulator, tenant, "reader", GRAPH, "r")
    not_owned = tenant["apps"]["not-owned"]
    body = {"passwordCredential": {"displayName": "x"}}
    error_graph(graph(emulator, "POST", f"/applications/{not_owned['id']}/addPassword", owned, json=body), 403, "Authorization_RequestDenied")
    error_graph(graph(emulator, "POST", f"/applications/{tenant['apps']['target']['id']}/addPassword", reader, json=body), 403, "Authorization_RequestDenied")

    consumer = tenant["apps"]["consumer"]
    for _ in range(2):
        assert graph(emulator, "POST", f"/applications/{consumer['id']}/addPassword", owned, json=body).status_code == 200
    r = graph(emulator, "POST", f"/applications/{consumer['id']}/addPassword", owned, json=body)
    error_graph(r, 400, "TooManyAppPasswords")
    assert r.json()["error"]["details"][0]["code"] == "TooManyAppPasswords"

    emulator.settings(max_password_lifetime_secs=86400)
    try:
        r = graph(emulator, "POST", f"/applications/{tenant['apps']['target']['id']}/addPassword", owned, json={"passwordCredential": {"endDateTime": "2299-01-01T00:00:00Z"}})
        error_graph(r, 400, "CredentialInvalidLifetimeAsPerAppPolicy")
    finally:
        emulator.settings(max_password_lifetime_secs=None)

    emulator.settings(concurrency_window_ms=5000)
    try:
        admin = token(emulator, tenant, "admin", GRAPH)
        target = tenant["apps"]["not-owned"]["id"]
        assert graph(emulator, "POST", f"/applications/{target}/addPassword", admin, json=body).status_code == 200, "ReadWrite.All needs no ownership"
        error_graph(graph(emulator, "POST", f"/applications/{target}/addPassword", admin, json=body), 409, "Directory_ConcurrencyViolation")
    finally:
        emulator.settings(concurrency_window_ms=0)


def test_graph_throttling(emulator, tenant):
    tok = token(emulator, tenant, "reader", GRAPH, "r")
    target = tenant["apps"]["target"]["id"]
    emulator.throttling(enabled=True, graph_ru_per_10s=5)
    try:
        statuses = []
        for _ in range(6):
            r = graph(emulator, "GET", f"/applications/{target}?$select=id", tok)
            statuses.append(r.status_code)
            if r.status_code == 200:
                assert r.headers["x-ms-resource-unit"] == "1"
        assert statuses[:5] == [200] * 5 and statuses[5] == 429, statuses
        error_graph(r, 429, "TooManyRequests")
        assert float(r.headers["Retry-After"]) > 0
        assert "." in r.headers["Retry-After"], "Graph's Retry-After may be fractional"
    finally:
        emulator.throttling(enabled=False)


# ---- Key Vault --------------------------------------------------------------------------------


def kv(emulator, tenant, method, path, tok=None, version="2025-07-01", **kw):
    headers = kw.pop("headers", {})
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    params = kw.pop("params", {})
    if version:
        params["api-version"] = version
    return emulator.http.request(method, f"{tenant['vault']}{path}", headers=headers, params=params, **kw)


def error_kv(r, status, code, inner=None):
    assert r.status_code == status, r.text
    check_kv(r.json(), "KeyVaultError")
    assert r.json()["error"]["code"] == code, r.text
    if inner:
        assert r.json()["error"]["innererror"]["code"] == inner, r.text


def test_key_vault_challenge_and_authorization(emulator, tenant):
    r = kv(emulator, tenant, "GET", "/secrets/anything/")
    error_kv(r, 401, "Unauthorized")
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer authorization=") and 'resource="https://vault.azure.net"' in challenge
    error_kv(kv(emulator, tenant, "GET", "/secrets/anything/", token(emulator, tenant, "admin", GRAPH)), 401, "Unauthorized")
    error_kv(kv(emulator, tenant, "GET", "/secrets/anything/", token(emulator, tenant, "stranger", VAULT, "s")), 403, "Forbidden", "ForbiddenByRbac")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/anything", token(emulator, tenant, "reader", VAULT, "r"), json={"value": "x"}), 403, "Forbidden", "ForbiddenByRbac")


def test_key_vault_api_versions(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    for v in KV_VERSIONS:
        r = kv(emulator, tenant, "PUT", "/secrets/versioned", tok, version=v, json={"value": "v"})
        assert r.status_code == 200, (v, r.text)
        check_kv(r.json(), "SecretBundle", v)
        assert ("previousVersion" in r.json()) == (v not in ("7.5", "7.6") and r.json().get("previousVersion") is not None)
    error_kv(kv(emulator, tenant, "GET", "/secrets/versioned/", tok, version=None), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "GET", "/secrets/versioned/", tok, version="2016-10-01"), 400, "BadParameter")


def test_key_vault_secret_lifecycle(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    first = kv(emulator, tenant, "PUT", "/secrets/lifecycle", tok, json={"value": "one", "tags": {"a": "1"}, "attributes": {"exp": 4102444800}, "contentType": "text/plain"})
    assert first.status_code == 200
    check_kv(first.json(), "SecretBundle")
    assert first.json()["attributes"]["exp"] == 4102444800
    v1 = first.json()["id"].rsplit("/", 1)[1]
    assert len(v1) == 32
    second = kv(emulator, tenant, "PUT", "/secrets/lifecycle", tok, json={"value": "two"})
    assert second.json()["previousVersion"] == v1
    v2 = second.json()["id"].rsplit("/", 1)[1]

    for path in ["/secrets/lifecycle", "/secrets/lifecycle/"]:
        r = kv(emulator, tenant, "GET", path, tok)
        assert r.status_code == 200 and r.json()["value"] == "two"
        check_kv(r.json(), "SecretBundle")
    r = kv(emulator, tenant, "GET", f"/secrets/lifecycle/{v1}", tok)
    assert r.json()["value"] == "one" and r.json()["tags"] == {"a": "1"}
    error_kv(kv(emulator, tenant, "GET", "/secrets/nope/", tok), 404, "SecretNotFound")
    error_kv(kv(emulator, tenant, "GET", f"/secrets/lifecycle/{'0' * 32}", tok), 404, "SecretNotFound")

    # Paging: an absolute nextLink with $skiptoken and maxresults, followed verbatim.
    r = kv(emulator, tenant, "GET", "/secrets/lifecycle/versions", tok, params={"maxresults": "1"})
    assert r.status_code == 200
    check_kv(r.json(), "SecretListResult")
    seen = [i["id"] for i in r.json()["value"]]
    next_link = r.json()["nextLink"]
    assert next_link.startswith(tenant["vault"]) and "$skiptoken=" in next_link and "maxresults=1" in next_link
    r = emulator.http.get(next_link, headers={"Authorization": f"Bearer {tok}"})
    check_kv(r.json(), "SecretListResult")
    seen += [i["id"] for i in r.json()["value"]]
    assert "nextLink" not in r.json()
    # Key Vault promises no listing order (the emulator lists by version id, not by creation).
    assert sorted(s.rsplit("/", 1)[1] for s in seen) == sorted([v1, v2])
    error_kv(kv(emulator, tenant, "GET", "/secrets/lifecycle/versions", tok, params={"maxresults": "26"}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "GET", "/secrets/nope/versions", tok), 404, "SecretNotFound")

    r = kv(emulator, tenant, "GET", "/secrets", tok)
    assert r.status_code == 200
    check_kv(r.json(), "SecretListResult")
    assert any(i["id"].endswith("/secrets/lifecycle") for i in r.json()["value"])
    error_kv(kv(emulator, tenant, "GET", "/secrets", tok, params={"maxresults": "0"}), 400, "BadParameter")

    r = kv(emulator, tenant, "PATCH", f"/secrets/lifecycle/{v2}", tok, json={"attributes": {"enabled": False}, "tags": {"b": "2"}})
    assert r.status_code == 200
    check_kv(r.json(), "SecretBundle")
    assert "value" not in r.json(), "an update answers without the value"
    error_kv(kv(emulator, tenant, "GET", "/secrets/lifecycle/", tok), 403, "Forbidden", "SecretDisabled")
    error_kv(kv(emulator, tenant, "PATCH", f"/secrets/nope/{v2}", tok, json={}), 404, "SecretNotFound")

    r = kv(emulator, tenant, "DELETE", "/secrets/lifecycle", tok)
    assert r.status_code == 200
    check_kv(r.json(), "DeletedSecretBundle")
    assert r.json()["recoveryId"].endswith("/deletedsecrets/lifecycle")
    error_kv(kv(emulator, tenant, "DELETE", "/secrets/lifecycle", tok), 404, "SecretNotFound")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/lifecycle", tok, json={"value": "three"}), 409, "Conflict", "ObjectIsDeletedButRecoverable")
    r = kv(emulator, tenant, "GET", "/deletedsecrets/lifecycle", tok)
    assert r.status_code == 200
    check_kv(r.json(), "DeletedSecretBundle")
    r = kv(emulator, tenant, "GET", "/deletedsecrets", tok)
    assert r.status_code == 200
    check_kv(r.json(), "DeletedSecretListResult")
    r = kv(emulator, tenant, "POST", "/deletedsecrets/lifecycle/recover", tok)
    assert r.status_code == 200
    check_kv(r.json(), "SecretBundle")
    error_kv(kv(emulator, tenant, "POST", "/deletedsecrets/lifecycle/recover", tok), 404, "SecretNotFound")
    assert kv(emulator, tenant, "DELETE", "/secrets/lifecycle", tok).status_code == 200
    r = kv(emulator, tenant, "DELETE", "/deletedsecrets/lifecycle", tok)
    assert r.status_code == 204 and r.content == b""
    error_kv(kv(emulator, tenant, "DELETE", "/deletedsecrets/lifecycle", tok), 404, "SecretNotFound")
    error_kv(kv(emulator, tenant, "GET", "/deletedsecrets/lifecycle", tok), 404, "SecretNotFound")


def test_key_vault_limits(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    error_kv(kv(emulator, tenant, "PUT", "/secrets/bad_name", tok, json={"value": "x"}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/" + "a" * 128, tok, json={"value": "x"}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/big", tok, json={"value": "x" * (25 * 1024 + 1)}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/tags", tok, json={"value": "x", "tags": {str(i): "v" for i in range(16)}}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/tags", tok, json={"value": "x", "tags": {"k": "v" * 257}}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/ct", tok, json={"value": "x", "contentType": "c" * 256}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "PUT", "/secrets/novalue", tok, json={"tags": {}}), 400, "BadParameter")
    assert kv(emulator, tenant, "PUT", "/secrets/fits", tok, json={"value": "x" * (25 * 1024), "tags": {str(i): "v" * 256 for i in range(15)}}).status_code == 200


def test_key_vault_throttling(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    emulator.throttling(enabled=True, kv_transactions_per_10s=3)
    try:
        statuses = [kv(emulator, tenant, "GET", "/secrets", tok) for _ in range(4)]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429]
        error_kv(statuses[3], 429, "Throttled")
        assert int(statuses[3].headers["Retry-After"]) >= 1
        emulator.throttling(kv_omit_retry_after=True)
        r = kv(emulator, tenant, "GET", "/secrets", tok)
        error_kv(r, 429, "Throttled")
        assert "Retry-After" not in r.headers, "some real 429s carry no Retry-After"
    finally:
        emulator.throttling(enabled=False, kv_omit_retry_after=False)


def test_injected_faults_have_the_services_error_shapes(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    emulator.fault(operation="keyvault.get_secret", count=1, fault="status", status=503)
    error_kv(kv(emulator, tenant, "GET", "/secrets/fits/", tok), 503, "InternalServerError")
    gtok = token(emulator, tenant, "admin", GRAPH)
    emulator.fault(operation="graph.get_application", count=1, fault="status", status=429, retry_after="2.5")
    r = graph(emulator, "GET", f"/applications/{tenant['apps']['target']['id']}", gtok)
    error_graph(r, 429, "TooManyRequests")
    assert r.headers["Retry-After"] == "2.5"
    emulator.fault(operation="token", count=1, fault="status", status=503)
    r = token_request(emulator, tenant, tenant["ids"]["admin"], tenant["secret"], GRAPH)
    assert r.status_code == 503
    check_entra(r.json(), "TokenError")


def test_bad_requests_get_the_services_error_shape_never_a_hang(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    gtok = token(emulator, tenant, "admin", GRAPH)
    error_kv(kv(emulator, tenant, "PUT", "/secrets/x", tok, data=b"\xff\xfe not json", headers={"Content-Type": "application/json"}), 400, "BadParameter")
    error_kv(kv(emulator, tenant, "GET", "/keys/x", tok), 400, "BadParameter")
    error_graph(graph(emulator, "GET", "/users", gtok), 400, "BadRequest")
    error_graph(graph(emulator, "DELETE", f"/applications/{tenant['apps']['target']['id']}", gtok), 405, "Request_BadRequest")
    r = emulator.http.post(f"{emulator.info['authority_host']}/{tenant['tenant']}/oauth2/v2.0/token", data=b"\x00\x01garbage", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    check_entra(r.json(), "TokenError")


def test_reads_lag_writes(emulator, tenant):
    owned = token(emulator, tenant, "owned_by", GRAPH, "o")
    target = tenant["apps"]["target"]["id"]
    emulator.settings(read_lag_ms=1500)
    try:
        key = graph(emulator, "POST", f"/applications/{target}/addPassword", owned, json={}).json()["keyId"]
        listed = lambda: {p["keyId"] for p in graph(emulator, "GET", f"/applications/{target}", owned).json()["passwordCredentials"]}
        assert key not in listed(), "a read right after the write does not show it yet"
        time.sleep(1.7)
        assert key in listed()
        assert graph(emulator, "POST", f"/applications/{target}/removePassword", owned, json={"keyId": key}).status_code == 204
        assert key in listed(), "a lagging read still shows the removed credential"
        time.sleep(1.7)
        assert key not in listed()
    finally:
        emulator.settings(read_lag_ms=0)


def test_new_secrets_propagate_within_the_window_per_request(emulator, tenant):
    owned = token(emulator, tenant, "owned_by", GRAPH, "o")
    target = tenant["apps"]["target"]
    emulator.settings(propagation_min_ms=1000, propagation_max_ms=2500)
    try:
        secret = graph(emulator, "POST", f"/applications/{target['id']}/addPassword", owned, json={}).json()["secretText"]
        r = token_request(emulator, tenant, target["app_id"], secret, GRAPH)
        assert r.status_code == 401 and r.json()["error_codes"] == [7000215], "not replicated yet"
        time.sleep(2.6)
        assert all(token_request(emulator, tenant, target["app_id"], secret, GRAPH).status_code == 200 for _ in range(5))
    finally:
        emulator.settings(propagation_min_ms=0, propagation_max_ms=0)


def test_expired_tokens_are_refused(emulator, tenant):
    emulator.settings(token_lifetime_secs=1)
    try:
        gtok = token(emulator, tenant, "admin", GRAPH)
        vtok = token(emulator, tenant, "admin", VAULT)
        time.sleep(1.2)
    finally:
        emulator.settings(token_lifetime_secs=3599)
    r = graph(emulator, "GET", f"/applications/{tenant['apps']['target']['id']}", gtok)
    error_graph(r, 401, "InvalidAuthenticationToken")
    assert "expired" in r.json()["error"]["message"]
    r = kv(emulator, tenant, "GET", "/secrets", vtok)
    error_kv(r, 401, "Unauthorized")
    assert "WWW-Authenticate" in r.headers


def test_graph_write_quota_and_limit_percentage(emulator, tenant):
    owned = token(emulator, tenant, "owned_by", GRAPH, "o")
    target = tenant["apps"]["target"]["id"]
    emulator.throttling(enabled=True, graph_writes_per_150s=2, graph_ru_per_10s=1000)
    try:
        answers = [graph(emulator, "POST", f"/applications/{target}/addPassword", owned, json={}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        error_graph(answers[2], 429, "TooManyRequests")
        assert answers[2].headers["x-ms-throttle-information"] == "WriteLimitExceeded"
        assert "x-ms-throttle-scope" in answers[2].headers
        assert float(answers[1].headers["x-ms-throttle-limit-percentage"]) >= 0.8, "sent above 80 % of a limit"
        assert "x-ms-throttle-limit-percentage" not in answers[0].headers or float(answers[0].headers["x-ms-throttle-limit-percentage"]) >= 0.8
    finally:
        emulator.throttling(enabled=False, graph_writes_per_150s=3000, graph_ru_per_10s=3500)


def test_key_vault_create_limit(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    emulator.throttling(enabled=True, kv_creates_per_10s=2, kv_transactions_per_10s=100)
    try:
        answers = [kv(emulator, tenant, "PUT", "/secrets/creates", tok, json={"value": "v"}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        error_kv(answers[2], 429, "Throttled")
        assert kv(emulator, tenant, "GET", "/secrets/creates/", tok).status_code == 200, "reads stay within the larger limit"
    finally:
        emulator.throttling(enabled=False, kv_creates_per_10s=300, kv_transactions_per_10s=4000)


def test_broken_answers_and_latency_can_be_injected(emulator, tenant):
    tok = token(emulator, tenant, "admin", VAULT)
    emulator.fault(operation="keyvault.list_secrets", count=1, fault="malformed")
    r = kv(emulator, tenant, "GET", "/secrets", tok)
    with pytest.raises(ValueError):
        r.json()
    emulator.fault(operation="keyvault.list_secrets", count=1, fault="truncate")
    r = kv(emulator, tenant, "GET", "/secrets", tok)
    with pytest.raises(ValueError):
        r.json()
    emulator.fault(operation="keyvault.list_secrets", count=1, fault="delay", ms=600)
    start = time.monotonic()
    assert kv(emulator, tenant, "GET", "/secrets", tok).status_code == 200
    assert time.monotonic() - start >= 0.6
    emulator.fault(operation="keyvault.list_secrets", count=1, fault="drop_after")
    import requests

    with pytest.raises(requests.exceptions.ConnectionError):
        kv(emulator, tenant, "GET", "/secrets", tok)
    assert kv(emulator, tenant, "GET", "/secrets", tok).status_code == 200, "the next call is answered"


# ---- onboarding: applications, service principals, ARM role assignments, DICOMweb --------------

ARM = "https://management.azure.com/.default"
DICOM = "https://dicom.healthcareapis.azure.com/.default"


@pytest.fixture(scope="module")
def onboarding(emulator, tenant):
    report = emulator.seed({
        "dicom_services": [{"name": "conformance"}],
        "role_assignments": [{"principal": tenant["ids"]["admin"], "role": "Owner", "scope": "subscription"}],
    })
    return report["dicom_services"]["conformance"]


def test_graph_create_application_and_service_principal(emulator, tenant):
    owned = token(emulator, tenant, "owned_by", GRAPH, "o")
    reader = token(emulator, tenant, "reader", GRAPH, "r")
    body = {"displayName": "onboarded", "signInAudience": "AzureADMyOrg", "tags": ["conformance-tag"]}
    r = graph(emulator, "POST", "/applications", owned, json=body)
    assert r.status_code == 201, r.text
    check_graph(r.json(), "microsoft.graph.application", ONBOARDING_SPEC)
    app = r.json()
    error_graph(graph(emulator, "POST", "/applications", reader, json=body), 403, "Authorization_RequestDenied")
    error_graph(graph(emulator, "POST", "/applications", owned, json={"displayName": "x", "nope": 1}), 400, "Request_BadRequest")

    r = graph(emulator, "GET", f"/applications/{app['id']}/owners", owned)
    assert r.status_code == 200, r.text
    check_graph(r.json(), "microsoft.graph.directoryObjectCollectionResponse", ONBOARDING_SPEC)
    assert [o["appId"] for o in r.json()["value"]] == [tenant["ids"]["owned_by"]]
    error_graph(graph(emulator, "GET", f"/applications/{new_id()}/owners", owned), 404, "Request_ResourceNotFound")

    r = graph(emulator, "GET", "/applications?$filter=tags/any(t:t eq 'conformance-tag')", owned)
    assert r.status_code == 200, r.text
    check_graph(r.json(), "microsoft.graph.applicationCollectionResponse")
    assert [a["id"] for a in r.json()["value"]] == [app["id"]]
    error_graph(graph(emulator, "GET", "/applications?$filter=not(tags/any(t:t eq 'conformance-tag'))", owned), 400, "Request_UnsupportedQuery")
    r = graph(emulator, "GET", "/applications?$filter=not(tags/any(t:t eq 'conformance-tag'))&$count=true", owned, headers={"ConsistencyLevel": "eventual"})
    assert r.status_code == 200 and app["id"] not in [a["id"] for a in r.json()["value"]], r.text
    assert r.json()["@odata.count"] == len(r.json()["value"])

    r = graph(emulator, "PATCH", f"/applications/{app['id']}", owned, json={"tags": ["other"]})
    assert r.status_code == 204, r.text
    error_graph(graph(emulator, "PATCH", f"/applications/{tenant['apps']['not-owned']['id']}", owned, json={"tags": []}), 403, "Authorization_RequestDenied")

    r = graph(emulator, "POST", "/servicePrincipals", owned, json={"appId": app["appId"]})
    assert r.status_code == 201, r.text
    check_graph(r.json(), "microsoft.graph.servicePrincipal", ONBOARDING_SPEC)
    error_graph(graph(emulator, "POST", "/servicePrincipals", owned, json={"appId": app["appId"]}), 409, "Request_MultipleObjectsWithSameKeyValue")
    r = graph(emulator, "GET", f"/servicePrincipals?$filter=appId eq '{app['appId']}'", owned)
    assert r.status_code == 200, r.text
    check_graph(r.json(), "microsoft.graph.servicePrincipalCollectionResponse", ONBOARDING_SPEC)
    error_graph(graph(emulator, "GET", "/servicePrincipals?$filter=appId gt 'x'", owned), 400, "Request_UnsupportedQuery")
    r = graph(emulator, "GET", f"/servicePrincipals(appId='{app['appId']}')", owned)
    assert r.status_code == 200, r.text
    check_graph(r.json(), "microsoft.graph.servicePrincipal", ONBOARDING_SPEC)
    error_graph(graph(emulator, "GET", f"/servicePrincipals(appId='{new_id()}')", owned), 404, "Request_ResourceNotFound")


def test_token_endpoint_refuses_a_resource_without_a_service_principal(emulator, tenant):
    r = token_request(emulator, tenant, tenant["ids"]["admin"], tenant["secret"], "api://no-such-resource/.default")
    assert r.status_code == 400, r.text
    check_entra(r.json(), "TokenError")
    assert r.json()["error_codes"] == [500011]
    assert r.json()["error"] == "invalid_resource"


def arm(emulator, method, path, tok=None, **kw):
    headers = kw.pop("headers", {})
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    return emulator.http.request(method, f"{emulator.info['arm_endpoint']}{path}", headers=headers, **kw)


def test_arm_role_definitions_and_assignments(emulator, tenant, onboarding):
    admin = token(emulator, tenant, "admin", ARM)
    stranger = token(emulator, tenant, "stranger", ARM, "s")
    scope = onboarding["resource_id"]
    r = arm(emulator, "GET", f"{scope}/providers/Microsoft.Authorization/roleDefinitions?api-version=2022-04-01&$filter=roleName eq 'DICOM Data Owner'", admin)
    assert r.status_code == 200, r.text
    check_arm(r.json(), ARM_DEFINITIONS, "RoleDefinitionListResult")
    definition = r.json()["value"][0]
    assert definition["name"] == "58a3b984-7adf-4c20-983a-32417c86fbc8"
    r = arm(emulator, "GET", f"{scope}/providers/Microsoft.Authorization/roleDefinitions", admin)
    assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter", r.text

    sp = graph(emulator, "GET", f"/servicePrincipals(appId='{tenant['ids']['reader']}')", token(emulator, tenant, "admin", GRAPH)).json()
    name = new_id()
    body = {"properties": {"roleDefinitionId": definition["id"], "principalId": sp["id"], "principalType": "ServicePrincipal"}}
    path = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version=2022-04-01"
    r = arm(emulator, "PUT", path, stranger, json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed", r.text
    r = arm(emulator, "PUT", path, admin, json=body)
    assert r.status_code == 201, r.text
    check_arm(r.json(), ARM_ASSIGNMENTS, "RoleAssignment")
    r = arm(emulator, "PUT", path.replace(name, new_id()), admin, json=body)
    assert r.status_code == 409 and r.json()["error"]["code"] == "RoleAssignmentExists", r.text
    r = arm(emulator, "GET", path, admin)
    assert r.status_code == 200, r.text
    check_arm(r.json(), ARM_ASSIGNMENTS, "RoleAssignment")
    r = arm(emulator, "GET", path.replace(name, new_id()), admin)
    assert r.status_code == 404, r.text


def test_dicomweb_checks_audience_and_role(emulator, tenant, onboarding):
    url = f"{onboarding['url']}/v2/changefeed?limit=1"
    reader = token_request(emulator, tenant, tenant["ids"]["reader"], tenant["secret"] + "r", DICOM).json()["access_token"]
    stranger = token_request(emulator, tenant, tenant["ids"]["stranger"], tenant["secret"] + "s", DICOM).json()["access_token"]
    r = emulator.http.get(url, headers={"Authorization": f"Bearer {token(emulator, tenant, 'reader', GRAPH, 'r')}"})
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert emulator.http.get(url, headers={"Authorization": f"Bearer {stranger}"}).status_code == 403
    r = emulator.http.get(url, headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200 and r.json() == [], r.text


def test_every_served_operation_was_exercised_with_a_success_and_an_error(emulator, tenant):
    journal = emulator.journal()
    missing = []
    for op in emulator.operations():
        statuses = [e["status"] for e in journal if e["operation"] == op]
        if not any(200 <= s < 300 for s in statuses):
            missing.append(f"{op}: no success case")
        if not any(s >= 400 for s in statuses):
            missing.append(f"{op}: no error case")
    assert not missing, "operations without conformance cases:\n" + "\n".join(missing)
